"""The cloud's storage account for recovery points.

Layers, bottom up: a :class:`Backend` (local directory or Azure Blob API) stores immutable
objects; packs (``packfile``) hold chunk frames and tree nodes with a self-describing trailer;
an SQLite index (``indexdb``) maps ids to pack locations and records points and upload
sessions; recovery points are Merkle trees over block maps (``merkle``); :class:`VaultStore`
ties them together with the write-ordering rules in ``store``; ``collector`` reclaims space;
``retention`` decides which points a policy keeps.
"""

from cloudsvc.vaultstore.backend import Backend, LocalDirBackend, ObjectInfo
from cloudsvc.vaultstore.blobbackend import BlobBackend
from cloudsvc.vaultstore.faultybackend import FaultyBackend
from cloudsvc.vaultstore.records import BlockChanges, Damage, DiskDelta, DiskInfo, GcStats, PointInfo, PointKind
from cloudsvc.vaultstore.retention import RetentionPolicy, points_to_keep
from cloudsvc.vaultstore.store import DEFAULT_PACK_SIZE, VaultStore

__all__ = [
    "DEFAULT_PACK_SIZE",
    "Backend",
    "BlobBackend",
    "BlockChanges",
    "Damage",
    "DiskDelta",
    "DiskInfo",
    "FaultyBackend",
    "GcStats",
    "LocalDirBackend",
    "ObjectInfo",
    "PointInfo",
    "PointKind",
    "RetentionPolicy",
    "VaultStore",
    "points_to_keep",
]
