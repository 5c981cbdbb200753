"""The cloud's storage account for recovery points.

Layers, bottom up: a :class:`Backend` (local directory or Azure Blob API) stores immutable
objects; packs (``packfile``) hold chunk frames and tree nodes with a self-describing trailer;
an SQLite index (``indexdb``) maps ids to pack locations and records points, upload sessions
and pins; recovery points are Merkle trees over block maps (``merkle``); :class:`VaultStore`
ties them together with the write-ordering rules in ``store``; ``pins`` keeps points that are
being read; ``integrity`` verifies points and rebuilds the index; ``collector`` reclaims
space; ``retention`` decides which points a policy keeps; ``faultybackend`` injects faults
for tests; ``wire`` reads and writes the Replication protocol's messages in these terms for
both of its servers (the vault, and a recovery host in site-to-site replication).

``blobbackend`` (the Azure Blob API) is imported from its module by whoever opens a blob
account (the cloud service), not from here: a recovery host uses this package on local
disks, and the Azure SDK cost every agent process ~0.25 s of start-up and ~11 MiB.
"""

from cloudsvc.vaultstore.backend import Backend, CheckedBackend, LocalDirBackend, ObjectInfo
from cloudsvc.vaultstore.faultybackend import Fault, FaultyBackend, faults_from_environment
from cloudsvc.vaultstore.records import (
    BlockChanges,
    Damage,
    DiskDelta,
    DiskInfo,
    GcStats,
    PinInfo,
    PointInfo,
    PointKind,
    RebuildResult,
    VerifyResult,
)
from cloudsvc.vaultstore.retention import RetentionPolicy, points_to_keep
from cloudsvc.vaultstore.store import DEFAULT_PACK_SIZE, VaultStore, destroy_store

__all__ = [
    "DEFAULT_PACK_SIZE",
    "Backend",
    "BlockChanges",
    "CheckedBackend",
    "Damage",
    "DiskDelta",
    "DiskInfo",
    "Fault",
    "FaultyBackend",
    "GcStats",
    "LocalDirBackend",
    "ObjectInfo",
    "PinInfo",
    "PointInfo",
    "PointKind",
    "RebuildResult",
    "RetentionPolicy",
    "VaultStore",
    "VerifyResult",
    "destroy_store",
    "faults_from_environment",
    "points_to_keep",
]
