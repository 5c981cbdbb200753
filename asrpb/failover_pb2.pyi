from asrpb import common_pb2 as _common_pb2
from asrpb import operator_pb2 as _operator_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FailoverRequest(_message.Message):
    __slots__ = ("vault", "vm", "plan", "point", "network", "subnet", "encryption_key", "direction", "shutdown_source", "size")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_KEY_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_SOURCE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    vault: str
    vm: str
    plan: str
    point: str
    network: str
    subnet: str
    encryption_key: bytes
    direction: str
    shutdown_source: bool
    size: str
    def __init__(self, vault: _Optional[str] = ..., vm: _Optional[str] = ..., plan: _Optional[str] = ..., point: _Optional[str] = ..., network: _Optional[str] = ..., subnet: _Optional[str] = ..., encryption_key: _Optional[bytes] = ..., direction: _Optional[str] = ..., shutdown_source: _Optional[bool] = ..., size: _Optional[str] = ...) -> None: ...

class RecoveredVmList(_message.Message):
    __slots__ = ("vms",)
    VMS_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[_operator_pb2.RecoveredVm]
    def __init__(self, vms: _Optional[_Iterable[_Union[_operator_pb2.RecoveredVm, _Mapping]]] = ...) -> None: ...

class RecoveredVmRef(_message.Message):
    __slots__ = ("vault", "vm")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    vault: str
    vm: str
    def __init__(self, vault: _Optional[str] = ..., vm: _Optional[str] = ...) -> None: ...

class PlanRef(_message.Message):
    __slots__ = ("vault", "plan")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    vault: str
    plan: str
    def __init__(self, vault: _Optional[str] = ..., plan: _Optional[str] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("vault", "name", "vms")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    vault: str
    name: str
    vms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vault: _Optional[str] = ..., name: _Optional[str] = ..., vms: _Optional[_Iterable[str]] = ...) -> None: ...

class PlanGroupRequest(_message.Message):
    __slots__ = ("vault", "plan", "vms")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    vault: str
    plan: str
    vms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vault: _Optional[str] = ..., plan: _Optional[str] = ..., vms: _Optional[_Iterable[str]] = ...) -> None: ...

class PlanActionRequest(_message.Message):
    __slots__ = ("vault", "plan", "group", "when", "kind", "name", "argv", "timeout_seconds", "instructions")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    vault: str
    plan: str
    group: int
    when: str
    kind: str
    name: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    timeout_seconds: float
    instructions: str
    def __init__(self, vault: _Optional[str] = ..., plan: _Optional[str] = ..., group: _Optional[int] = ..., when: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., timeout_seconds: _Optional[float] = ..., instructions: _Optional[str] = ...) -> None: ...

class PlanAction(_message.Message):
    __slots__ = ("when", "kind", "name", "argv", "timeout_seconds", "instructions")
    WHEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    when: str
    kind: str
    name: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    timeout_seconds: float
    instructions: str
    def __init__(self, when: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., timeout_seconds: _Optional[float] = ..., instructions: _Optional[str] = ...) -> None: ...

class PlanGroup(_message.Message):
    __slots__ = ("number", "vms", "actions")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    number: int
    vms: _containers.RepeatedScalarFieldContainer[str]
    actions: _containers.RepeatedCompositeFieldContainer[PlanAction]
    def __init__(self, number: _Optional[int] = ..., vms: _Optional[_Iterable[str]] = ..., actions: _Optional[_Iterable[_Union[PlanAction, _Mapping]]] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("name", "groups", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    groups: _containers.RepeatedCompositeFieldContainer[PlanGroup]
    created_at: float
    def __init__(self, name: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[PlanGroup, _Mapping]]] = ..., created_at: _Optional[float] = ...) -> None: ...

class PlanList(_message.Message):
    __slots__ = ("plans",)
    PLANS_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[Plan]
    def __init__(self, plans: _Optional[_Iterable[_Union[Plan, _Mapping]]] = ...) -> None: ...

class SyncStart(_message.Message):
    __slots__ = ("session_id", "full")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    full: bool
    def __init__(self, session_id: _Optional[str] = ..., full: _Optional[bool] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("start", "hashes", "hashes_done", "applied")
    START_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    HASHES_DONE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    start: SyncStart
    hashes: BlockHashes
    hashes_done: bool
    applied: bool
    def __init__(self, start: _Optional[_Union[SyncStart, _Mapping]] = ..., hashes: _Optional[_Union[BlockHashes, _Mapping]] = ..., hashes_done: _Optional[bool] = ..., applied: _Optional[bool] = ...) -> None: ...

class SyncEnd(_message.Message):
    __slots__ = ("blocks", "bytes", "compared", "untracked")
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    UNTRACKED_FIELD_NUMBER: _ClassVar[int]
    blocks: int
    bytes: int
    compared: int
    untracked: bool
    def __init__(self, blocks: _Optional[int] = ..., bytes: _Optional[int] = ..., compared: _Optional[int] = ..., untracked: _Optional[bool] = ...) -> None: ...

class SyncReply(_message.Message):
    __slots__ = ("blocks", "end", "committed")
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    blocks: BlockDiff
    end: SyncEnd
    committed: bool
    def __init__(self, blocks: _Optional[_Union[BlockDiff, _Mapping]] = ..., end: _Optional[_Union[SyncEnd, _Mapping]] = ..., committed: _Optional[bool] = ...) -> None: ...

class BlockHashes(_message.Message):
    __slots__ = ("session_id", "disk_index", "first_block", "hashes", "virtual_size")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DISK_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_BLOCK_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    disk_index: int
    first_block: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    virtual_size: int
    def __init__(self, session_id: _Optional[str] = ..., disk_index: _Optional[int] = ..., first_block: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ..., virtual_size: _Optional[int] = ...) -> None: ...

class DiffBlock(_message.Message):
    __slots__ = ("index", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    data: bytes
    def __init__(self, index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class BlockDiff(_message.Message):
    __slots__ = ("disk_index", "first_block", "compared", "blocks")
    DISK_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_BLOCK_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    disk_index: int
    first_block: int
    compared: int
    blocks: _containers.RepeatedCompositeFieldContainer[DiffBlock]
    def __init__(self, disk_index: _Optional[int] = ..., first_block: _Optional[int] = ..., compared: _Optional[int] = ..., blocks: _Optional[_Iterable[_Union[DiffBlock, _Mapping]]] = ...) -> None: ...
