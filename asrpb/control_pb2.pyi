from asrpb import inventory_pb2 as _inventory_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConfigureHost(_message.Message):
    __slots__ = ("host", "policy", "vault_id")
    HOST_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VAULT_ID_FIELD_NUMBER: _ClassVar[int]
    host: str
    policy: _inventory_pb2.Policy
    vault_id: str
    def __init__(self, host: _Optional[str] = ..., policy: _Optional[_Union[_inventory_pb2.Policy, _Mapping]] = ..., vault_id: _Optional[str] = ...) -> None: ...

class EnableReplication(_message.Message):
    __slots__ = ("host", "vm_id", "vm_name", "policy", "customer_key", "vault_id", "replica_target")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_KEY_FIELD_NUMBER: _ClassVar[int]
    VAULT_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_TARGET_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm_id: str
    vm_name: str
    policy: _inventory_pb2.Policy
    customer_key: bytes
    vault_id: str
    replica_target: ReplicaTarget
    def __init__(self, host: _Optional[str] = ..., vm_id: _Optional[str] = ..., vm_name: _Optional[str] = ..., policy: _Optional[_Union[_inventory_pb2.Policy, _Mapping]] = ..., customer_key: _Optional[bytes] = ..., vault_id: _Optional[str] = ..., replica_target: _Optional[_Union[ReplicaTarget, _Mapping]] = ...) -> None: ...

class ReplicaTarget(_message.Message):
    __slots__ = ("recovery_host", "address", "pairing_id")
    RECOVERY_HOST_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PAIRING_ID_FIELD_NUMBER: _ClassVar[int]
    recovery_host: str
    address: str
    pairing_id: str
    def __init__(self, recovery_host: _Optional[str] = ..., address: _Optional[str] = ..., pairing_id: _Optional[str] = ...) -> None: ...

class AcceptReplica(_message.Message):
    __slots__ = ("host", "vm_id", "vm_name", "source_host", "pairing_id", "policy", "vault_id", "disks")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HOST_FIELD_NUMBER: _ClassVar[int]
    PAIRING_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VAULT_ID_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm_id: str
    vm_name: str
    source_host: str
    pairing_id: str
    policy: _inventory_pb2.Policy
    vault_id: str
    disks: _containers.RepeatedCompositeFieldContainer[_inventory_pb2.Disk]
    def __init__(self, host: _Optional[str] = ..., vm_id: _Optional[str] = ..., vm_name: _Optional[str] = ..., source_host: _Optional[str] = ..., pairing_id: _Optional[str] = ..., policy: _Optional[_Union[_inventory_pb2.Policy, _Mapping]] = ..., vault_id: _Optional[str] = ..., disks: _Optional[_Iterable[_Union[_inventory_pb2.Disk, _Mapping]]] = ...) -> None: ...

class ReleaseReplica(_message.Message):
    __slots__ = ("host", "vm_id", "vm_name", "pairing_id", "delete_data")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    PAIRING_ID_FIELD_NUMBER: _ClassVar[int]
    DELETE_DATA_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm_id: str
    vm_name: str
    pairing_id: str
    delete_data: bool
    def __init__(self, host: _Optional[str] = ..., vm_id: _Optional[str] = ..., vm_name: _Optional[str] = ..., pairing_id: _Optional[str] = ..., delete_data: _Optional[bool] = ...) -> None: ...

class ReplicaFailover(_message.Message):
    __slots__ = ("host", "vm_id", "vm_name", "pairing_id", "point_id", "kind", "name", "networks", "cpus", "memory_mb", "guest_os", "generation", "start")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    PAIRING_ID_FIELD_NUMBER: _ClassVar[int]
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    GUEST_OS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm_id: str
    vm_name: str
    pairing_id: str
    point_id: str
    kind: str
    name: str
    networks: _containers.RepeatedScalarFieldContainer[str]
    cpus: int
    memory_mb: int
    guest_os: str
    generation: int
    start: bool
    def __init__(self, host: _Optional[str] = ..., vm_id: _Optional[str] = ..., vm_name: _Optional[str] = ..., pairing_id: _Optional[str] = ..., point_id: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., networks: _Optional[_Iterable[str]] = ..., cpus: _Optional[int] = ..., memory_mb: _Optional[int] = ..., guest_os: _Optional[str] = ..., generation: _Optional[int] = ..., start: _Optional[bool] = ...) -> None: ...

class ReplicaCleanup(_message.Message):
    __slots__ = ("host", "vm_id", "vm_name", "pairing_id", "kind", "action")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    PAIRING_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm_id: str
    vm_name: str
    pairing_id: str
    kind: str
    action: str
    def __init__(self, host: _Optional[str] = ..., vm_id: _Optional[str] = ..., vm_name: _Optional[str] = ..., pairing_id: _Optional[str] = ..., kind: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class DisableReplication(_message.Message):
    __slots__ = ("host", "vm_id", "vm_name")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm_id: str
    vm_name: str
    def __init__(self, host: _Optional[str] = ..., vm_id: _Optional[str] = ..., vm_name: _Optional[str] = ...) -> None: ...

class PowerVm(_message.Message):
    __slots__ = ("host", "vm_id", "vm_name", "action")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm_id: str
    vm_name: str
    action: str
    def __init__(self, host: _Optional[str] = ..., vm_id: _Optional[str] = ..., vm_name: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class ReplicateNow(_message.Message):
    __slots__ = ("host", "vm_id", "vm_name", "shutdown_first")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIRST_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm_id: str
    vm_name: str
    shutdown_first: bool
    def __init__(self, host: _Optional[str] = ..., vm_id: _Optional[str] = ..., vm_name: _Optional[str] = ..., shutdown_first: _Optional[bool] = ...) -> None: ...

class Failback(_message.Message):
    __slots__ = ("host", "vm_id", "vm_name", "session_id", "start_vm", "replica_source", "incremental")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    START_VM_FIELD_NUMBER: _ClassVar[int]
    REPLICA_SOURCE_FIELD_NUMBER: _ClassVar[int]
    INCREMENTAL_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm_id: str
    vm_name: str
    session_id: str
    start_vm: bool
    replica_source: ReplicaTarget
    incremental: bool
    def __init__(self, host: _Optional[str] = ..., vm_id: _Optional[str] = ..., vm_name: _Optional[str] = ..., session_id: _Optional[str] = ..., start_vm: _Optional[bool] = ..., replica_source: _Optional[_Union[ReplicaTarget, _Mapping]] = ..., incremental: _Optional[bool] = ...) -> None: ...

class ReverseReplicate(_message.Message):
    __slots__ = ("host", "vm_id", "vm_name", "source", "action", "interval_seconds")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm_id: str
    vm_name: str
    source: ReplicaTarget
    action: str
    interval_seconds: int
    def __init__(self, host: _Optional[str] = ..., vm_id: _Optional[str] = ..., vm_name: _Optional[str] = ..., source: _Optional[_Union[ReplicaTarget, _Mapping]] = ..., action: _Optional[str] = ..., interval_seconds: _Optional[int] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("id", "created_at", "epoch", "configure_host", "enable_replication", "disable_replication", "power_vm", "replicate_now", "failback", "accept_replica", "release_replica", "replica_failover", "replica_cleanup", "reverse_replicate")
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIGURE_HOST_FIELD_NUMBER: _ClassVar[int]
    ENABLE_REPLICATION_FIELD_NUMBER: _ClassVar[int]
    DISABLE_REPLICATION_FIELD_NUMBER: _ClassVar[int]
    POWER_VM_FIELD_NUMBER: _ClassVar[int]
    REPLICATE_NOW_FIELD_NUMBER: _ClassVar[int]
    FAILBACK_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_REPLICA_FIELD_NUMBER: _ClassVar[int]
    RELEASE_REPLICA_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FAILOVER_FIELD_NUMBER: _ClassVar[int]
    REPLICA_CLEANUP_FIELD_NUMBER: _ClassVar[int]
    REVERSE_REPLICATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    created_at: float
    epoch: int
    configure_host: ConfigureHost
    enable_replication: EnableReplication
    disable_replication: DisableReplication
    power_vm: PowerVm
    replicate_now: ReplicateNow
    failback: Failback
    accept_replica: AcceptReplica
    release_replica: ReleaseReplica
    replica_failover: ReplicaFailover
    replica_cleanup: ReplicaCleanup
    reverse_replicate: ReverseReplicate
    def __init__(self, id: _Optional[str] = ..., created_at: _Optional[float] = ..., epoch: _Optional[int] = ..., configure_host: _Optional[_Union[ConfigureHost, _Mapping]] = ..., enable_replication: _Optional[_Union[EnableReplication, _Mapping]] = ..., disable_replication: _Optional[_Union[DisableReplication, _Mapping]] = ..., power_vm: _Optional[_Union[PowerVm, _Mapping]] = ..., replicate_now: _Optional[_Union[ReplicateNow, _Mapping]] = ..., failback: _Optional[_Union[Failback, _Mapping]] = ..., accept_replica: _Optional[_Union[AcceptReplica, _Mapping]] = ..., release_replica: _Optional[_Union[ReleaseReplica, _Mapping]] = ..., replica_failover: _Optional[_Union[ReplicaFailover, _Mapping]] = ..., replica_cleanup: _Optional[_Union[ReplicaCleanup, _Mapping]] = ..., reverse_replicate: _Optional[_Union[ReverseReplicate, _Mapping]] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("id", "ok", "error_code", "error_message", "output")
    ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    id: str
    ok: bool
    error_code: str
    error_message: str
    output: str
    def __init__(self, id: _Optional[str] = ..., ok: _Optional[bool] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., output: _Optional[str] = ...) -> None: ...

class CommandPoll(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class InventorySync(_message.Message):
    __slots__ = ("clouds", "generated_at")
    CLOUDS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    clouds: _containers.RepeatedCompositeFieldContainer[_inventory_pb2.VmmCloud]
    generated_at: float
    def __init__(self, clouds: _Optional[_Iterable[_Union[_inventory_pb2.VmmCloud, _Mapping]]] = ..., generated_at: _Optional[float] = ...) -> None: ...

class SyncSummary(_message.Message):
    __slots__ = ("clouds", "hosts", "vms", "removed_vms")
    CLOUDS_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_VMS_FIELD_NUMBER: _ClassVar[int]
    clouds: int
    hosts: int
    vms: int
    removed_vms: int
    def __init__(self, clouds: _Optional[int] = ..., hosts: _Optional[int] = ..., vms: _Optional[int] = ..., removed_vms: _Optional[int] = ...) -> None: ...

class ProtectionRequest(_message.Message):
    __slots__ = ("vm_name", "nic", "disable")
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    NIC_FIELD_NUMBER: _ClassVar[int]
    DISABLE_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    nic: int
    disable: bool
    def __init__(self, vm_name: _Optional[str] = ..., nic: _Optional[int] = ..., disable: _Optional[bool] = ...) -> None: ...

class ProtectionReply(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...
