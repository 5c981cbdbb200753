"""The values the vault store hands to and takes from the cloud service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

PointKind = Literal["crash", "app"]


@dataclass(frozen=True)
class DiskDelta:
    """One disk of a new point: its virtual size and the blocks that differ from the base
    point's disk (block index -> chunk id, ZERO_ID for a block that became zero). With no
    base this is the full map and absent blocks are zero."""

    virtual_size: int
    changes: Mapping[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class DiskInfo:
    disk_index: int
    virtual_size: int
    fanout: int
    root: bytes


@dataclass(frozen=True)
class PointInfo:
    point_id: str
    vm_id: str
    created_at: float
    kind: PointKind
    disks: tuple[DiskInfo, ...]


@dataclass(frozen=True)
class Damage:
    """One problem found by verify. ``block_index`` is the first block a damaged tree node
    covers; ``chunk_id`` is the chunk or node id that is missing or damaged."""

    point_id: str
    disk_index: int
    block_index: int
    chunk_id: bytes
    what: str


@dataclass
class GcStats:
    live_points: int = 0
    live_blobs: int = 0
    deleted_blobs: int = 0
    packs_deleted: int = 0
    packs_written: int = 0
    sessions_expired: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    damaged_packs: list[str] = field(default_factory=list)
