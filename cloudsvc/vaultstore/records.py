"""The values the vault store hands to and takes from the cloud service."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

ID_BYTES = 32

PointKind = Literal["crash", "app"]


class BlockChanges(Mapping[int, bytes]):
    """A disk's changed blocks (block index -> chunk id) in 40 bytes per block: the indexes
    ascending in an ``array('Q')``, the ids packed in one bytes object.

    Why not a dict: the initial point of a disk names every allocated block, and a dict of
    int -> bytes costs ~170 bytes per block (11 MiB for 4 GiB, 2.8 GiB for a 1 TB disk), so
    the cloud's memory would grow with the disk. Lookups are binary searches; ``indexes``
    gives the sorted keys without making Python ints of them all."""

    __slots__ = ("indexes", "_ids")

    def __init__(self, indexes: array, ids: bytes) -> None:  # type: ignore[type-arg]
        if len(ids) != len(indexes) * ID_BYTES:
            raise ValueError("one 32-byte id per block index is needed")
        self.indexes = indexes
        self._ids = ids

    @classmethod
    def from_parts(cls, indexes: array, ids: bytes) -> BlockChanges:  # type: ignore[type-arg]
        """From indexes in any order (a later duplicate wins, as in a dict); already
        ascending input (what the agent sends) is taken as it is, without copies."""
        if all(indexes[i] < indexes[i + 1] for i in range(len(indexes) - 1)):
            return cls(indexes, bytes(ids))
        latest = {b: ids[k * ID_BYTES:(k + 1) * ID_BYTES] for k, b in enumerate(indexes)}
        return cls.from_mapping(latest)

    @classmethod
    def from_mapping(cls, changes: Mapping[int, bytes]) -> BlockChanges:
        keys = sorted(changes)
        return cls(array("Q", keys), b"".join(changes[k] for k in keys))

    def _find(self, block: int) -> int:
        i = bisect.bisect_left(self.indexes, block)
        return i if i < len(self.indexes) and self.indexes[i] == block else -1

    def __getitem__(self, block: int) -> bytes:
        i = self._find(block) if isinstance(block, int) and block >= 0 else -1
        if i < 0:
            raise KeyError(block)
        return self._ids[i * ID_BYTES:(i + 1) * ID_BYTES]

    def __contains__(self, block: object) -> bool:
        return isinstance(block, int) and block >= 0 and self._find(block) >= 0

    def __iter__(self) -> Iterator[int]:
        return iter(self.indexes)

    def __len__(self) -> int:
        return len(self.indexes)

    def ids(self) -> Iterator[bytes]:
        """The chunk ids in block order (cheaper than ``values()``, which searches per key)."""
        for i in range(len(self.indexes)):
            yield self._ids[i * ID_BYTES:(i + 1) * ID_BYTES]


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
