from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Disk(_message.Message):
    __slots__ = ("path", "controller", "os_disk", "format", "subformat", "virtual_size", "parent")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    OS_DISK_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SUBFORMAT_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    path: str
    controller: str
    os_disk: bool
    format: str
    subformat: str
    virtual_size: int
    parent: str
    def __init__(self, path: _Optional[str] = ..., controller: _Optional[str] = ..., os_disk: _Optional[bool] = ..., format: _Optional[str] = ..., subformat: _Optional[str] = ..., virtual_size: _Optional[int] = ..., parent: _Optional[str] = ...) -> None: ...

class Nic(_message.Message):
    __slots__ = ("mode", "address", "network")
    MODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    mode: str
    address: str
    network: str
    def __init__(self, mode: _Optional[str] = ..., address: _Optional[str] = ..., network: _Optional[str] = ...) -> None: ...

class Vm(_message.Message):
    __slots__ = ("vm_id", "name", "generation", "cpus", "memory_mb", "guest_os", "power_state", "disks", "nics", "host")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    GUEST_OS_FIELD_NUMBER: _ClassVar[int]
    POWER_STATE_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    NICS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    name: str
    generation: int
    cpus: int
    memory_mb: int
    guest_os: str
    power_state: str
    disks: _containers.RepeatedCompositeFieldContainer[Disk]
    nics: _containers.RepeatedCompositeFieldContainer[Nic]
    host: str
    def __init__(self, vm_id: _Optional[str] = ..., name: _Optional[str] = ..., generation: _Optional[int] = ..., cpus: _Optional[int] = ..., memory_mb: _Optional[int] = ..., guest_os: _Optional[str] = ..., power_state: _Optional[str] = ..., disks: _Optional[_Iterable[_Union[Disk, _Mapping]]] = ..., nics: _Optional[_Iterable[_Union[Nic, _Mapping]]] = ..., host: _Optional[str] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("name", "connected", "last_seen", "vms", "replica_address", "replica_free_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    connected: bool
    last_seen: float
    vms: _containers.RepeatedCompositeFieldContainer[Vm]
    replica_address: str
    replica_free_bytes: int
    def __init__(self, name: _Optional[str] = ..., connected: _Optional[bool] = ..., last_seen: _Optional[float] = ..., vms: _Optional[_Iterable[_Union[Vm, _Mapping]]] = ..., replica_address: _Optional[str] = ..., replica_free_bytes: _Optional[int] = ...) -> None: ...

class VmmCloud(_message.Message):
    __slots__ = ("name", "hosts", "networks")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    networks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ..., networks: _Optional[_Iterable[str]] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("storage", "encrypt", "copy_frequency_seconds", "retention_hours", "app_consistent_hours", "start", "cloud", "target_cloud", "compression")
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    ENCRYPT_FIELD_NUMBER: _ClassVar[int]
    COPY_FREQUENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_HOURS_FIELD_NUMBER: _ClassVar[int]
    APP_CONSISTENT_HOURS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLOUD_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    storage: str
    encrypt: bool
    copy_frequency_seconds: int
    retention_hours: int
    app_consistent_hours: int
    start: str
    cloud: str
    target_cloud: str
    compression: str
    def __init__(self, storage: _Optional[str] = ..., encrypt: _Optional[bool] = ..., copy_frequency_seconds: _Optional[int] = ..., retention_hours: _Optional[int] = ..., app_consistent_hours: _Optional[int] = ..., start: _Optional[str] = ..., cloud: _Optional[str] = ..., target_cloud: _Optional[str] = ..., compression: _Optional[str] = ...) -> None: ...
