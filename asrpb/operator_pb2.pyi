from asrpb import common_pb2 as _common_pb2
from asrpb import inventory_pb2 as _inventory_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateOperatorRequest(_message.Message):
    __slots__ = ("name", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class OperatorCreated(_message.Message):
    __slots__ = ("name", "role", "password", "credential_json", "portal_url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_JSON_FIELD_NUMBER: _ClassVar[int]
    PORTAL_URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    password: str
    credential_json: str
    portal_url: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., password: _Optional[str] = ..., credential_json: _Optional[str] = ..., portal_url: _Optional[str] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("name", "display_name", "pair")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    pair: str
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., pair: _Optional[str] = ...) -> None: ...

class RegionList(_message.Message):
    __slots__ = ("regions",)
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    regions: _containers.RepeatedCompositeFieldContainer[Region]
    def __init__(self, regions: _Optional[_Iterable[_Union[Region, _Mapping]]] = ...) -> None: ...

class VaultRef(_message.Message):
    __slots__ = ("vault",)
    VAULT_FIELD_NUMBER: _ClassVar[int]
    vault: str
    def __init__(self, vault: _Optional[str] = ...) -> None: ...

class ResourceRef(_message.Message):
    __slots__ = ("vault", "name")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    vault: str
    name: str
    def __init__(self, vault: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateVaultRequest(_message.Message):
    __slots__ = ("name", "region")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    name: str
    region: str
    def __init__(self, name: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...

class Vault(_message.Message):
    __slots__ = ("id", "name", "region", "created_at", "key_expires_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    region: str
    created_at: float
    key_expires_at: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., region: _Optional[str] = ..., created_at: _Optional[float] = ..., key_expires_at: _Optional[float] = ...) -> None: ...

class VaultList(_message.Message):
    __slots__ = ("vaults",)
    VAULTS_FIELD_NUMBER: _ClassVar[int]
    vaults: _containers.RepeatedCompositeFieldContainer[Vault]
    def __init__(self, vaults: _Optional[_Iterable[_Union[Vault, _Mapping]]] = ...) -> None: ...

class DeleteVaultRequest(_message.Message):
    __slots__ = ("vault", "force")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    vault: str
    force: bool
    def __init__(self, vault: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class GenerateKeyRequest(_message.Message):
    __slots__ = ("vault", "valid_days")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    VALID_DAYS_FIELD_NUMBER: _ClassVar[int]
    vault: str
    valid_days: int
    def __init__(self, vault: _Optional[str] = ..., valid_days: _Optional[int] = ...) -> None: ...

class KeyFile(_message.Message):
    __slots__ = ("content", "expires_at", "key_id")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    expires_at: float
    key_id: str
    def __init__(self, content: _Optional[bytes] = ..., expires_at: _Optional[float] = ..., key_id: _Optional[str] = ...) -> None: ...

class ActivateKeyRequest(_message.Message):
    __slots__ = ("vault", "key_id")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    vault: str
    key_id: str
    def __init__(self, vault: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class CreateStorageRequest(_message.Message):
    __slots__ = ("vault", "name", "region", "redundancy", "backend", "blob_connection_string")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    REDUNDANCY_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BLOB_CONNECTION_STRING_FIELD_NUMBER: _ClassVar[int]
    vault: str
    name: str
    region: str
    redundancy: str
    backend: str
    blob_connection_string: str
    def __init__(self, vault: _Optional[str] = ..., name: _Optional[str] = ..., region: _Optional[str] = ..., redundancy: _Optional[str] = ..., backend: _Optional[str] = ..., blob_connection_string: _Optional[str] = ...) -> None: ...

class StorageAccount(_message.Message):
    __slots__ = ("name", "region", "redundancy", "backend", "location")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    REDUNDANCY_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    region: str
    redundancy: str
    backend: str
    location: str
    def __init__(self, name: _Optional[str] = ..., region: _Optional[str] = ..., redundancy: _Optional[str] = ..., backend: _Optional[str] = ..., location: _Optional[str] = ...) -> None: ...

class StorageList(_message.Message):
    __slots__ = ("accounts",)
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[StorageAccount]
    def __init__(self, accounts: _Optional[_Iterable[_Union[StorageAccount, _Mapping]]] = ...) -> None: ...

class Subnet(_message.Message):
    __slots__ = ("name", "cidr")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    name: str
    cidr: str
    def __init__(self, name: _Optional[str] = ..., cidr: _Optional[str] = ...) -> None: ...

class CreateNetworkRequest(_message.Message):
    __slots__ = ("vault", "name", "region", "address_space", "subnets")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_SPACE_FIELD_NUMBER: _ClassVar[int]
    SUBNETS_FIELD_NUMBER: _ClassVar[int]
    vault: str
    name: str
    region: str
    address_space: str
    subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    def __init__(self, vault: _Optional[str] = ..., name: _Optional[str] = ..., region: _Optional[str] = ..., address_space: _Optional[str] = ..., subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ...) -> None: ...

class Network(_message.Message):
    __slots__ = ("name", "region", "address_space", "subnets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_SPACE_FIELD_NUMBER: _ClassVar[int]
    SUBNETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    region: str
    address_space: str
    subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    def __init__(self, name: _Optional[str] = ..., region: _Optional[str] = ..., address_space: _Optional[str] = ..., subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ...) -> None: ...

class NetworkList(_message.Message):
    __slots__ = ("networks",)
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    networks: _containers.RepeatedCompositeFieldContainer[Network]
    def __init__(self, networks: _Optional[_Iterable[_Union[Network, _Mapping]]] = ...) -> None: ...

class Server(_message.Message):
    __slots__ = ("role", "name", "version", "registered_at", "last_heartbeat", "state", "provider", "encryption", "identity")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    role: str
    name: str
    version: str
    registered_at: float
    last_heartbeat: float
    state: str
    provider: str
    encryption: bool
    identity: str
    def __init__(self, role: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., registered_at: _Optional[float] = ..., last_heartbeat: _Optional[float] = ..., state: _Optional[str] = ..., provider: _Optional[str] = ..., encryption: _Optional[bool] = ..., identity: _Optional[str] = ...) -> None: ...

class ServerList(_message.Message):
    __slots__ = ("servers",)
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    servers: _containers.RepeatedCompositeFieldContainer[Server]
    def __init__(self, servers: _Optional[_Iterable[_Union[Server, _Mapping]]] = ...) -> None: ...

class RemoveServerRequest(_message.Message):
    __slots__ = ("vault", "role", "name")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    vault: str
    role: str
    name: str
    def __init__(self, vault: _Optional[str] = ..., role: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class NetworkMapping(_message.Message):
    __slots__ = ("vault", "primary_cloud", "primary_network", "recovery_cloud", "recovery_network", "created_at")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_CLOUD_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_NETWORK_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_CLOUD_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_NETWORK_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    vault: str
    primary_cloud: str
    primary_network: str
    recovery_cloud: str
    recovery_network: str
    created_at: float
    def __init__(self, vault: _Optional[str] = ..., primary_cloud: _Optional[str] = ..., primary_network: _Optional[str] = ..., recovery_cloud: _Optional[str] = ..., recovery_network: _Optional[str] = ..., created_at: _Optional[float] = ...) -> None: ...

class NetworkMappingList(_message.Message):
    __slots__ = ("mappings",)
    MAPPINGS_FIELD_NUMBER: _ClassVar[int]
    mappings: _containers.RepeatedCompositeFieldContainer[NetworkMapping]
    def __init__(self, mappings: _Optional[_Iterable[_Union[NetworkMapping, _Mapping]]] = ...) -> None: ...

class NetworkMappingRef(_message.Message):
    __slots__ = ("vault", "primary_cloud", "primary_network")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_CLOUD_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_NETWORK_FIELD_NUMBER: _ClassVar[int]
    vault: str
    primary_cloud: str
    primary_network: str
    def __init__(self, vault: _Optional[str] = ..., primary_cloud: _Optional[str] = ..., primary_network: _Optional[str] = ...) -> None: ...

class CloudHost(_message.Message):
    __slots__ = ("name", "connected", "replica_address", "replica_free_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    connected: bool
    replica_address: str
    replica_free_bytes: int
    def __init__(self, name: _Optional[str] = ..., connected: _Optional[bool] = ..., replica_address: _Optional[str] = ..., replica_free_bytes: _Optional[int] = ...) -> None: ...

class CloudInfo(_message.Message):
    __slots__ = ("name", "provider", "hosts", "vms", "protected", "policy", "networks", "host_details")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    PROTECTED_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    HOST_DETAILS_FIELD_NUMBER: _ClassVar[int]
    name: str
    provider: str
    hosts: _containers.RepeatedScalarFieldContainer[str]
    vms: int
    protected: bool
    policy: _inventory_pb2.Policy
    networks: _containers.RepeatedScalarFieldContainer[str]
    host_details: _containers.RepeatedCompositeFieldContainer[CloudHost]
    def __init__(self, name: _Optional[str] = ..., provider: _Optional[str] = ..., hosts: _Optional[_Iterable[str]] = ..., vms: _Optional[int] = ..., protected: _Optional[bool] = ..., policy: _Optional[_Union[_inventory_pb2.Policy, _Mapping]] = ..., networks: _Optional[_Iterable[str]] = ..., host_details: _Optional[_Iterable[_Union[CloudHost, _Mapping]]] = ...) -> None: ...

class CloudList(_message.Message):
    __slots__ = ("clouds",)
    CLOUDS_FIELD_NUMBER: _ClassVar[int]
    clouds: _containers.RepeatedCompositeFieldContainer[CloudInfo]
    def __init__(self, clouds: _Optional[_Iterable[_Union[CloudInfo, _Mapping]]] = ...) -> None: ...

class ProtectCloudRequest(_message.Message):
    __slots__ = ("vault", "cloud", "policy")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    vault: str
    cloud: str
    policy: _inventory_pb2.Policy
    def __init__(self, vault: _Optional[str] = ..., cloud: _Optional[str] = ..., policy: _Optional[_Union[_inventory_pb2.Policy, _Mapping]] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("vault", "id")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    vault: str
    id: str
    def __init__(self, vault: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class ListVmsRequest(_message.Message):
    __slots__ = ("vault", "cloud")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    vault: str
    cloud: str
    def __init__(self, vault: _Optional[str] = ..., cloud: _Optional[str] = ...) -> None: ...

class VmRef(_message.Message):
    __slots__ = ("vault", "vm")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    vault: str
    vm: str
    def __init__(self, vault: _Optional[str] = ..., vm: _Optional[str] = ...) -> None: ...

class UnprotectVmRequest(_message.Message):
    __slots__ = ("vault", "vm", "force")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    vault: str
    vm: str
    force: bool
    def __init__(self, vault: _Optional[str] = ..., vm: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ProtectVmRequest(_message.Message):
    __slots__ = ("vault", "vm", "nic", "recovery_host")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    NIC_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_HOST_FIELD_NUMBER: _ClassVar[int]
    vault: str
    vm: str
    nic: int
    recovery_host: str
    def __init__(self, vault: _Optional[str] = ..., vm: _Optional[str] = ..., nic: _Optional[int] = ..., recovery_host: _Optional[str] = ...) -> None: ...

class VmStatus(_message.Message):
    __slots__ = ("vm", "cloud", "provider", "protection_state", "replication_health", "health_errors", "allowed_operations", "policy", "last_replication", "rpo_seconds", "initial_replication_progress", "active_location", "recovered_vms", "epoch", "primary_copy", "primary_copy_detail", "latest_events", "recovery_cloud", "recovery_host", "pairing_id", "replica_free_bytes", "last_replica_report_at", "replica_points", "reverse_synced_at", "reverse_blocks", "reverse_error")
    VM_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_STATE_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LAST_REPLICATION_FIELD_NUMBER: _ClassVar[int]
    RPO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_REPLICATION_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_LOCATION_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_VMS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_COPY_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_COPY_DETAIL_FIELD_NUMBER: _ClassVar[int]
    LATEST_EVENTS_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_CLOUD_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_HOST_FIELD_NUMBER: _ClassVar[int]
    PAIRING_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_REPLICA_REPORT_AT_FIELD_NUMBER: _ClassVar[int]
    REPLICA_POINTS_FIELD_NUMBER: _ClassVar[int]
    REVERSE_SYNCED_AT_FIELD_NUMBER: _ClassVar[int]
    REVERSE_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    REVERSE_ERROR_FIELD_NUMBER: _ClassVar[int]
    vm: _inventory_pb2.Vm
    cloud: str
    provider: str
    protection_state: str
    replication_health: str
    health_errors: _containers.RepeatedScalarFieldContainer[str]
    allowed_operations: _containers.RepeatedScalarFieldContainer[str]
    policy: _inventory_pb2.Policy
    last_replication: float
    rpo_seconds: float
    initial_replication_progress: float
    active_location: str
    recovered_vms: _containers.RepeatedCompositeFieldContainer[RecoveredVm]
    epoch: int
    primary_copy: str
    primary_copy_detail: str
    latest_events: _containers.RepeatedCompositeFieldContainer[Event]
    recovery_cloud: str
    recovery_host: str
    pairing_id: str
    replica_free_bytes: int
    last_replica_report_at: float
    replica_points: int
    reverse_synced_at: float
    reverse_blocks: int
    reverse_error: str
    def __init__(self, vm: _Optional[_Union[_inventory_pb2.Vm, _Mapping]] = ..., cloud: _Optional[str] = ..., provider: _Optional[str] = ..., protection_state: _Optional[str] = ..., replication_health: _Optional[str] = ..., health_errors: _Optional[_Iterable[str]] = ..., allowed_operations: _Optional[_Iterable[str]] = ..., policy: _Optional[_Union[_inventory_pb2.Policy, _Mapping]] = ..., last_replication: _Optional[float] = ..., rpo_seconds: _Optional[float] = ..., initial_replication_progress: _Optional[float] = ..., active_location: _Optional[str] = ..., recovered_vms: _Optional[_Iterable[_Union[RecoveredVm, _Mapping]]] = ..., epoch: _Optional[int] = ..., primary_copy: _Optional[str] = ..., primary_copy_detail: _Optional[str] = ..., latest_events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., recovery_cloud: _Optional[str] = ..., recovery_host: _Optional[str] = ..., pairing_id: _Optional[str] = ..., replica_free_bytes: _Optional[int] = ..., last_replica_report_at: _Optional[float] = ..., replica_points: _Optional[int] = ..., reverse_synced_at: _Optional[float] = ..., reverse_blocks: _Optional[int] = ..., reverse_error: _Optional[str] = ...) -> None: ...

class VmList(_message.Message):
    __slots__ = ("vms",)
    VMS_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[VmStatus]
    def __init__(self, vms: _Optional[_Iterable[_Union[VmStatus, _Mapping]]] = ...) -> None: ...

class RecoveredDisk(_message.Message):
    __slots__ = ("index", "path", "virtual_size")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    index: int
    path: str
    virtual_size: int
    def __init__(self, index: _Optional[int] = ..., path: _Optional[str] = ..., virtual_size: _Optional[int] = ...) -> None: ...

class RecoveredVm(_message.Message):
    __slots__ = ("id", "name", "source_vm_id", "source_name", "kind", "state", "point_id", "size", "network", "subnet", "address", "disks", "job_id", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VM_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    source_vm_id: str
    source_name: str
    kind: str
    state: str
    point_id: str
    size: str
    network: str
    subnet: str
    address: str
    disks: _containers.RepeatedCompositeFieldContainer[RecoveredDisk]
    job_id: str
    created_at: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., source_vm_id: _Optional[str] = ..., source_name: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., point_id: _Optional[str] = ..., size: _Optional[str] = ..., network: _Optional[str] = ..., subnet: _Optional[str] = ..., address: _Optional[str] = ..., disks: _Optional[_Iterable[_Union[RecoveredDisk, _Mapping]]] = ..., job_id: _Optional[str] = ..., created_at: _Optional[float] = ...) -> None: ...

class JobTask(_message.Message):
    __slots__ = ("name", "state", "started_at", "ended_at", "error", "output")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    started_at: float
    ended_at: float
    error: _common_pb2.ErrorDetail
    output: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., started_at: _Optional[float] = ..., ended_at: _Optional[float] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., output: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "kind", "target", "state", "created_at", "started_at", "ended_at", "tasks", "error", "progress", "bytes_done", "bytes_total")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    target: str
    state: str
    created_at: float
    started_at: float
    ended_at: float
    tasks: _containers.RepeatedCompositeFieldContainer[JobTask]
    error: _common_pb2.ErrorDetail
    progress: float
    bytes_done: int
    bytes_total: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., target: _Optional[str] = ..., state: _Optional[str] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., ended_at: _Optional[float] = ..., tasks: _Optional[_Iterable[_Union[JobTask, _Mapping]]] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., progress: _Optional[float] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ...) -> None: ...

class JobList(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("vault", "state", "kind", "vm", "limit")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    vault: str
    state: str
    kind: str
    vm: str
    limit: int
    def __init__(self, vault: _Optional[str] = ..., state: _Optional[str] = ..., kind: _Optional[str] = ..., vm: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class BillingRequest(_message.Message):
    __slots__ = ("vault", "month", "scenario")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    MONTH_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    vault: str
    month: str
    scenario: str
    def __init__(self, vault: _Optional[str] = ..., month: _Optional[str] = ..., scenario: _Optional[str] = ...) -> None: ...

class BillingLine(_message.Message):
    __slots__ = ("vm_id", "name", "protected_days", "replicated_bytes")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROTECTED_DAYS_FIELD_NUMBER: _ClassVar[int]
    REPLICATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    name: str
    protected_days: float
    replicated_bytes: int
    def __init__(self, vm_id: _Optional[str] = ..., name: _Optional[str] = ..., protected_days: _Optional[float] = ..., replicated_bytes: _Optional[int] = ...) -> None: ...

class BillingReport(_message.Message):
    __slots__ = ("month", "scenario", "days_in_month", "average_protected_vms", "unit_price", "protection_charge", "replicated_bytes", "included_gb", "excess_gb", "price_per_excess_gb", "storage_charge", "total", "currency", "vms")
    MONTH_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    DAYS_IN_MONTH_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PROTECTED_VMS_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_CHARGE_FIELD_NUMBER: _ClassVar[int]
    REPLICATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_GB_FIELD_NUMBER: _ClassVar[int]
    EXCESS_GB_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_EXCESS_GB_FIELD_NUMBER: _ClassVar[int]
    STORAGE_CHARGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    month: str
    scenario: str
    days_in_month: int
    average_protected_vms: float
    unit_price: float
    protection_charge: float
    replicated_bytes: int
    included_gb: float
    excess_gb: float
    price_per_excess_gb: float
    storage_charge: float
    total: float
    currency: str
    vms: _containers.RepeatedCompositeFieldContainer[BillingLine]
    def __init__(self, month: _Optional[str] = ..., scenario: _Optional[str] = ..., days_in_month: _Optional[int] = ..., average_protected_vms: _Optional[float] = ..., unit_price: _Optional[float] = ..., protection_charge: _Optional[float] = ..., replicated_bytes: _Optional[int] = ..., included_gb: _Optional[float] = ..., excess_gb: _Optional[float] = ..., price_per_excess_gb: _Optional[float] = ..., storage_charge: _Optional[float] = ..., total: _Optional[float] = ..., currency: _Optional[str] = ..., vms: _Optional[_Iterable[_Union[BillingLine, _Mapping]]] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("vault", "vm", "limit", "server", "since", "severity")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    vault: str
    vm: str
    limit: int
    server: str
    since: float
    severity: str
    def __init__(self, vault: _Optional[str] = ..., vm: _Optional[str] = ..., limit: _Optional[int] = ..., server: _Optional[str] = ..., since: _Optional[float] = ..., severity: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "at", "severity", "vm_id", "vm_name", "server", "code", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    at: float
    severity: str
    vm_id: str
    vm_name: str
    server: str
    code: str
    message: str
    def __init__(self, id: _Optional[int] = ..., at: _Optional[float] = ..., severity: _Optional[str] = ..., vm_id: _Optional[str] = ..., vm_name: _Optional[str] = ..., server: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class EventList(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...
