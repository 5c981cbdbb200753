"""The values the vault store hands to and takes from the cloud service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from chunkfmt.blockmap import BlockMap

PointKind = Literal["crash", "app"]


# The cloud's name for a point's changed blocks; one type with the agent's (chunkfmt.blockmap).
BlockChanges = BlockMap


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
    groups_regrouped: int = 0   # partly dead unencrypted group frames rewritten with their live members
    sessions_expired: int = 0
    packs_kept_by_age: int = 0  # sealed after the oldest open upload session began: not examined
    bytes_before: int = 0
    bytes_after: int = 0
    damaged_packs: list[str] = field(default_factory=list)


class VerifyResult(list[Damage]):
    """What :meth:`VaultStore.verify` found: the damage (this list; empty means intact) and
    how much was checked. A list so that code that compared the result with ``[]`` keeps
    working; the wire's ``VerifyReport`` takes ``packs_checked`` and ``blocks_checked``."""

    def __init__(self, damage: list[Damage], packs_checked: int, blocks_checked: int) -> None:
        super().__init__(damage)
        self.packs_checked = packs_checked  # packs whose header, trailer and name were checked
        self.blocks_checked = blocks_checked  # non-zero blocks whose chunk was re-read and hashed

    @property
    def damage(self) -> list[Damage]:
        return list(self)


@dataclass(frozen=True)
class RebuildResult:
    """What :meth:`VaultStore.rebuild_index` did (the wire's ``RebuildIndexReport``)."""

    packs: int  # packs whose trailer was read and indexed
    blobs: int  # chunk and tree-node rows rebuilt
    damaged_packs: list[str]  # packs left out: their trailer is unreadable


@dataclass(frozen=True)
class PinInfo:
    """A pin on a point (see ``VaultStore.pin``). ``expires_at`` None: held until released
    by its holder's name; otherwise a lease its process renews while it holds the pin."""

    pin_id: str
    point_id: str
    holder: str
    expires_at: float | None
