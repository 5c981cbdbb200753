from asrpb import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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

class GenerateKeyRequest(_message.Message):
    __slots__ = ("vault", "valid_days")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    VALID_DAYS_FIELD_NUMBER: _ClassVar[int]
    vault: str
    valid_days: int
    def __init__(self, vault: _Optional[str] = ..., valid_days: _Optional[int] = ...) -> None: ...

class KeyFile(_message.Message):
    __slots__ = ("content", "expires_at")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    expires_at: float
    def __init__(self, content: _Optional[bytes] = ..., expires_at: _Optional[float] = ...) -> None: ...

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
