"""A disk's block map (block index -> chunk id), packed: what the agent ships in a point
commit and what the cloud builds the point's tree from.

The block indexes are kept ascending in an ``array('Q')`` and the ids packed in one byte
string, 8 + 32 bytes per block. Why not a dict: the initial point of a disk names every
allocated block, and a dict of int -> bytes costs ~170 bytes per block (11 MiB for 4 GiB,
2.8 GiB for a 1 TB disk), so memory would grow with the disk on both sides. Lookups are
binary searches; ``indexes`` gives the sorted keys without making Python ints of them all.

The agent appends changed blocks in ascending order as it finds them and sends slices of the
map (:meth:`BlockMap.block_bytes`, :meth:`BlockMap.id_bytes`: the wire's little-endian
indexes and packed ids); the cloud rebuilds the map from those parts (:meth:`BlockMap.from_parts`).
"""

from __future__ import annotations

import bisect
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping

from chunkfmt.ids import ID_SIZE


class BlockMap(Mapping[int, bytes]):
    """Block index -> 32-byte chunk id, indexes strictly ascending (see the module doc)."""

    __slots__ = ("indexes", "_ids")

    def __init__(self, indexes: array | None = None, ids: bytes | bytearray = b"") -> None:  # type: ignore[type-arg]
        """Take ``indexes`` (already strictly ascending) and their packed ``ids`` as they are,
        without copies; use :meth:`from_parts` for input in any order."""
        self.indexes: array = indexes if indexes is not None else array("Q")  # type: ignore[type-arg]
        if self.indexes.typecode != "Q":
            raise ValueError("block indexes must be an array('Q')")
        if len(ids) != len(self.indexes) * ID_SIZE:
            raise ValueError("one 32-byte id per block index is needed")
        self._ids = ids

    @classmethod
    def from_parts(cls, indexes: array, ids: bytes | bytearray) -> BlockMap:  # type: ignore[type-arg]
        """From indexes in any order (a later duplicate wins, as in a dict); already
        ascending input (what the agent sends) is taken as it is, without copies."""
        if len(ids) != len(indexes) * ID_SIZE:
            raise ValueError("one 32-byte id per block index is needed")
        if all(indexes[i] < indexes[i + 1] for i in range(len(indexes) - 1)):
            return cls(indexes, ids)
        latest = {b: bytes(ids[k * ID_SIZE:(k + 1) * ID_SIZE]) for k, b in enumerate(indexes)}
        return cls.from_mapping(latest)

    @classmethod
    def from_mapping(cls, changes: Mapping[int, bytes]) -> BlockMap:
        keys = sorted(changes)
        return cls(array("Q", keys), b"".join(changes[k] for k in keys))

    # --- building (the agent) ------------------------------------------------------------
    def append(self, block: int, chunk_id: bytes) -> None:
        """Add one block after every block already in the map."""
        self.extend([(block, chunk_id)])

    def extend(self, items: Iterable[tuple[int, bytes]]) -> None:
        """Add blocks in strictly ascending order, all after the last block in the map."""
        batch = list(items)
        last = self.indexes[-1] if self.indexes else -1
        for block, cid in batch:
            if block <= last:
                raise ValueError(f"block {block} does not follow block {last}: blocks must be added in ascending order")
            if len(cid) != ID_SIZE:
                raise ValueError("a chunk id is 32 bytes")
            last = block
        if not batch:
            return
        if not isinstance(self._ids, bytearray):
            self._ids = bytearray(self._ids)  # taken read-only until now; copied once
        self.indexes.extend(b for b, _ in batch)
        self._ids += b"".join(c for _, c in batch)

    # --- slices for the wire -------------------------------------------------------------
    def block_bytes(self, start: int, stop: int) -> bytes:
        """Block indexes ``start:stop`` (positions in the map) as little-endian uint64s."""
        part = self.indexes[start:stop]
        if sys.byteorder != "little":
            part.byteswap()
        return part.tobytes()

    def id_bytes(self, start: int, stop: int) -> bytes:
        """The packed ids of positions ``start:stop``, in block order."""
        return bytes(self._ids[start * ID_SIZE:stop * ID_SIZE])

    # --- reading -------------------------------------------------------------------------
    def _find(self, block: int) -> int:
        i = bisect.bisect_left(self.indexes, block)
        return i if i < len(self.indexes) and self.indexes[i] == block else -1

    def __getitem__(self, block: int) -> bytes:
        i = self._find(block) if isinstance(block, int) and block >= 0 else -1
        if i < 0:
            raise KeyError(block)
        return bytes(self._ids[i * ID_SIZE:(i + 1) * ID_SIZE])

    def id_at(self, position: int) -> bytes:
        """The id at ``position`` in block order (of block ``indexes[position]``)."""
        return bytes(self._ids[position * ID_SIZE:(position + 1) * ID_SIZE])

    def __contains__(self, block: object) -> bool:
        return isinstance(block, int) and block >= 0 and self._find(block) >= 0

    def __iter__(self) -> Iterator[int]:
        return iter(self.indexes)

    def __len__(self) -> int:
        return len(self.indexes)

    def ids(self) -> Iterator[bytes]:
        """The chunk ids in block order (cheaper than ``values()``, which searches per key)."""
        data = self._ids
        for i in range(len(self.indexes)):
            yield bytes(data[i * ID_SIZE:(i + 1) * ID_SIZE])

    def __repr__(self) -> str:
        return f"BlockMap({len(self)} blocks)"
