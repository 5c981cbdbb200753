from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReverseReport(_message.Message):
    __slots__ = ("vm_id", "pairing_id", "synced_at", "blocks", "error")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    PAIRING_ID_FIELD_NUMBER: _ClassVar[int]
    SYNCED_AT_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    pairing_id: str
    synced_at: float
    blocks: int
    error: str
    def __init__(self, vm_id: _Optional[str] = ..., pairing_id: _Optional[str] = ..., synced_at: _Optional[float] = ..., blocks: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ReplicaPoint(_message.Message):
    __slots__ = ("point_id", "created_at", "app_consistent", "logical_bytes", "stored_bytes", "epoch")
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    APP_CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    point_id: str
    created_at: float
    app_consistent: bool
    logical_bytes: int
    stored_bytes: int
    epoch: int
    def __init__(self, point_id: _Optional[str] = ..., created_at: _Optional[float] = ..., app_consistent: _Optional[bool] = ..., logical_bytes: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class ReplicaReport(_message.Message):
    __slots__ = ("vm_id", "pairing_id", "points", "free_bytes", "health", "message", "last_received_at", "applied_point_id")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    PAIRING_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_POINT_ID_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    pairing_id: str
    points: _containers.RepeatedCompositeFieldContainer[ReplicaPoint]
    free_bytes: int
    health: str
    message: str
    last_received_at: float
    applied_point_id: str
    def __init__(self, vm_id: _Optional[str] = ..., pairing_id: _Optional[str] = ..., points: _Optional[_Iterable[_Union[ReplicaPoint, _Mapping]]] = ..., free_bytes: _Optional[int] = ..., health: _Optional[str] = ..., message: _Optional[str] = ..., last_received_at: _Optional[float] = ..., applied_point_id: _Optional[str] = ...) -> None: ...

class ReplicaAck(_message.Message):
    __slots__ = ("paired",)
    PAIRED_FIELD_NUMBER: _ClassVar[int]
    paired: bool
    def __init__(self, paired: _Optional[bool] = ...) -> None: ...

class PointDisk(_message.Message):
    __slots__ = ("disk_index", "virtual_size")
    DISK_INDEX_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    disk_index: int
    virtual_size: int
    def __init__(self, disk_index: _Optional[int] = ..., virtual_size: _Optional[int] = ...) -> None: ...

class BeginCycleRequest(_message.Message):
    __slots__ = ("vm_id", "epoch", "final")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    epoch: int
    final: bool
    def __init__(self, vm_id: _Optional[str] = ..., epoch: _Optional[int] = ..., final: _Optional[bool] = ...) -> None: ...

class BeginCycleReply(_message.Message):
    __slots__ = ("session_id", "base_point_id", "base_created_at", "base_disks")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_POINT_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    BASE_DISKS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    base_point_id: str
    base_created_at: float
    base_disks: _containers.RepeatedCompositeFieldContainer[PointDisk]
    def __init__(self, session_id: _Optional[str] = ..., base_point_id: _Optional[str] = ..., base_created_at: _Optional[float] = ..., base_disks: _Optional[_Iterable[_Union[PointDisk, _Mapping]]] = ...) -> None: ...

class MissingRequest(_message.Message):
    __slots__ = ("session_id", "ids")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    ids: bytes
    def __init__(self, session_id: _Optional[str] = ..., ids: _Optional[bytes] = ...) -> None: ...

class MissingReply(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: bytes
    def __init__(self, ids: _Optional[bytes] = ...) -> None: ...

class ChunkBatch(_message.Message):
    __slots__ = ("session_id", "ids", "frames", "groups")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    ids: _containers.RepeatedScalarFieldContainer[bytes]
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    groups: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, session_id: _Optional[str] = ..., ids: _Optional[_Iterable[bytes]] = ..., frames: _Optional[_Iterable[bytes]] = ..., groups: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PutChunksReply(_message.Message):
    __slots__ = ("received", "bytes")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    received: int
    bytes: int
    def __init__(self, received: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class CommitPart(_message.Message):
    __slots__ = ("session_id", "vm_id", "base_point_id", "kind", "created_at", "disks", "disk_index", "blocks", "ids", "last", "uploaded_bytes", "resync_disks")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_POINT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    DISK_INDEX_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESYNC_DISKS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    vm_id: str
    base_point_id: str
    kind: str
    created_at: float
    disks: _containers.RepeatedCompositeFieldContainer[PointDisk]
    disk_index: int
    blocks: bytes
    ids: bytes
    last: bool
    uploaded_bytes: int
    resync_disks: int
    def __init__(self, session_id: _Optional[str] = ..., vm_id: _Optional[str] = ..., base_point_id: _Optional[str] = ..., kind: _Optional[str] = ..., created_at: _Optional[float] = ..., disks: _Optional[_Iterable[_Union[PointDisk, _Mapping]]] = ..., disk_index: _Optional[int] = ..., blocks: _Optional[bytes] = ..., ids: _Optional[bytes] = ..., last: _Optional[bool] = ..., uploaded_bytes: _Optional[int] = ..., resync_disks: _Optional[int] = ...) -> None: ...

class PointAck(_message.Message):
    __slots__ = ("point_id", "created_at")
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    point_id: str
    created_at: float
    def __init__(self, point_id: _Optional[str] = ..., created_at: _Optional[float] = ...) -> None: ...

class BlockMapRequest(_message.Message):
    __slots__ = ("vm_id", "point_id", "disk_index")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    DISK_INDEX_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    point_id: str
    disk_index: int
    def __init__(self, vm_id: _Optional[str] = ..., point_id: _Optional[str] = ..., disk_index: _Optional[int] = ...) -> None: ...

class BlockMapPart(_message.Message):
    __slots__ = ("start_block", "ids")
    START_BLOCK_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    start_block: int
    ids: bytes
    def __init__(self, start_block: _Optional[int] = ..., ids: _Optional[bytes] = ...) -> None: ...

class ProgressReport(_message.Message):
    __slots__ = ("vm_id", "initial_progress", "error", "epoch", "warning", "warning_code")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    INITIAL_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    WARNING_CODE_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    initial_progress: float
    error: str
    epoch: int
    warning: str
    warning_code: str
    def __init__(self, vm_id: _Optional[str] = ..., initial_progress: _Optional[float] = ..., error: _Optional[str] = ..., epoch: _Optional[int] = ..., warning: _Optional[str] = ..., warning_code: _Optional[str] = ...) -> None: ...

class ProgressAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EpochCheck(_message.Message):
    __slots__ = ("vm_id", "epoch")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    epoch: int
    def __init__(self, vm_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class EpochStatus(_message.Message):
    __slots__ = ("epoch", "state")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    state: str
    def __init__(self, epoch: _Optional[int] = ..., state: _Optional[str] = ...) -> None: ...

class PointsRequest(_message.Message):
    __slots__ = ("vault", "vm")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    vault: str
    vm: str
    def __init__(self, vault: _Optional[str] = ..., vm: _Optional[str] = ...) -> None: ...

class RecoveryPoint(_message.Message):
    __slots__ = ("point_id", "created_at", "kind", "uploaded_bytes", "changed_blocks", "disks", "location")
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    point_id: str
    created_at: float
    kind: str
    uploaded_bytes: int
    changed_blocks: int
    disks: _containers.RepeatedCompositeFieldContainer[PointDisk]
    location: str
    def __init__(self, point_id: _Optional[str] = ..., created_at: _Optional[float] = ..., kind: _Optional[str] = ..., uploaded_bytes: _Optional[int] = ..., changed_blocks: _Optional[int] = ..., disks: _Optional[_Iterable[_Union[PointDisk, _Mapping]]] = ..., location: _Optional[str] = ...) -> None: ...

class PointList(_message.Message):
    __slots__ = ("vm_id", "points")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    points: _containers.RepeatedCompositeFieldContainer[RecoveryPoint]
    def __init__(self, vm_id: _Optional[str] = ..., points: _Optional[_Iterable[_Union[RecoveryPoint, _Mapping]]] = ...) -> None: ...

class PointRef(_message.Message):
    __slots__ = ("vault", "vm", "point_id")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    vault: str
    vm: str
    point_id: str
    def __init__(self, vault: _Optional[str] = ..., vm: _Optional[str] = ..., point_id: _Optional[str] = ...) -> None: ...

class Damage(_message.Message):
    __slots__ = ("disk_index", "block_index", "chunk_id", "what")
    DISK_INDEX_FIELD_NUMBER: _ClassVar[int]
    BLOCK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    disk_index: int
    block_index: int
    chunk_id: str
    what: str
    def __init__(self, disk_index: _Optional[int] = ..., block_index: _Optional[int] = ..., chunk_id: _Optional[str] = ..., what: _Optional[str] = ...) -> None: ...

class VerifyReport(_message.Message):
    __slots__ = ("point_id", "ok", "damage", "blocks_checked", "packs_checked")
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    DAMAGE_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    PACKS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    point_id: str
    ok: bool
    damage: _containers.RepeatedCompositeFieldContainer[Damage]
    blocks_checked: int
    packs_checked: int
    def __init__(self, point_id: _Optional[str] = ..., ok: _Optional[bool] = ..., damage: _Optional[_Iterable[_Union[Damage, _Mapping]]] = ..., blocks_checked: _Optional[int] = ..., packs_checked: _Optional[int] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("vault", "vm", "point_id", "disk_index")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    DISK_INDEX_FIELD_NUMBER: _ClassVar[int]
    vault: str
    vm: str
    point_id: str
    disk_index: int
    def __init__(self, vault: _Optional[str] = ..., vm: _Optional[str] = ..., point_id: _Optional[str] = ..., disk_index: _Optional[int] = ...) -> None: ...

class ExportPart(_message.Message):
    __slots__ = ("virtual_size", "point_id", "encrypted", "blocks", "frames", "ids")
    VIRTUAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    virtual_size: int
    point_id: str
    encrypted: bool
    blocks: _containers.RepeatedScalarFieldContainer[int]
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    ids: bytes
    def __init__(self, virtual_size: _Optional[int] = ..., point_id: _Optional[str] = ..., encrypted: _Optional[bool] = ..., blocks: _Optional[_Iterable[int]] = ..., frames: _Optional[_Iterable[bytes]] = ..., ids: _Optional[bytes] = ...) -> None: ...

class MaintenanceRequest(_message.Message):
    __slots__ = ("vault",)
    VAULT_FIELD_NUMBER: _ClassVar[int]
    vault: str
    def __init__(self, vault: _Optional[str] = ...) -> None: ...

class MaintenanceReport(_message.Message):
    __slots__ = ("points_deleted", "bytes_before", "bytes_after")
    POINTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    BYTES_BEFORE_FIELD_NUMBER: _ClassVar[int]
    BYTES_AFTER_FIELD_NUMBER: _ClassVar[int]
    points_deleted: int
    bytes_before: int
    bytes_after: int
    def __init__(self, points_deleted: _Optional[int] = ..., bytes_before: _Optional[int] = ..., bytes_after: _Optional[int] = ...) -> None: ...

class RebuildIndexRequest(_message.Message):
    __slots__ = ("vault", "storage")
    VAULT_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    vault: str
    storage: str
    def __init__(self, vault: _Optional[str] = ..., storage: _Optional[str] = ...) -> None: ...

class RebuildIndexReport(_message.Message):
    __slots__ = ("packs", "blobs", "damaged_packs")
    PACKS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_PACKS_FIELD_NUMBER: _ClassVar[int]
    packs: int
    blobs: int
    damaged_packs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, packs: _Optional[int] = ..., blobs: _Optional[int] = ..., damaged_packs: _Optional[_Iterable[str]] = ...) -> None: ...
