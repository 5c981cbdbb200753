"""Pack files: many stored blobs (chunk frames and tree-node frames) in one object.

Each pack ends with its own index trailer, so the chunk index can be rebuilt from the packs
alone (``VaultStore.rebuild_index``). Byte layout, integers little-endian::

    offset          size     field
    0               8        magic b"ASRPACK1"
    8               ...      blobs, concatenated (each one chunk frame, see chunkfmt.frame)
    T               77 * n   trailer entries, one per id (a group frame, which holds several
                             chunks, is one blob named by one entry per member: the entries
                             share its offset, length and hash):
                               1   kind (0 chunk, 1 tree node)
                               32  id (chunk id or tree-node id)
                               8   offset of the blob in this pack
                               4   length of the blob
                               32  BLAKE3 of the blob's stored bytes
    size - 44       4        n, the number of entries
    size - 40       32       BLAKE3 of the trailer entries (bytes T .. size-44)
    size - 8        8        magic b"ASRPKEND"

A pack's name is ``packs/<hh>/<BLAKE3 of the trailer entries, hex>`` (the footer's digest).
The entries name every blob's offset, length and BLAKE3, so this addresses the whole content
like a hash of the pack would, without hashing the blobs a second time (that second pass
was a tenth of the cloud's CPU per uploaded GiB). A re-put after a lost acknowledgement
writes the same name with the same bytes.

Several entries may name one blob (a group frame's members; see ``chunkfmt.encode_group``):
readers slice and hash such a blob once, and the collector counts its bytes once.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import blake3

from asrerrors import DataCorrupt

PACK_MAGIC = b"ASRPACK1"
PACK_END_MAGIC = b"ASRPKEND"
ENTRY = struct.Struct("<B32sQI32s")  # 77 bytes
FOOTER = struct.Struct("<I32s8s")  # 44 bytes
KIND_CHUNK = 0
KIND_NODE = 1
PACK_PREFIX = "packs/"


@dataclass(frozen=True)
class PackEntry:
    kind: int
    id: bytes
    offset: int
    length: int
    hash: bytes


def blob_hash(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest()


def name_for_digest(digest: bytes) -> str:
    """A pack's name from its trailer digest."""
    hexdigest = digest.hex()
    return f"{PACK_PREFIX}{hexdigest[:2]}/{hexdigest}"


def pack_name(pack_bytes: bytes | memoryview) -> str:
    """The name of a sealed pack, from the trailer digest in its footer (see the module doc)."""
    if len(pack_bytes) < len(PACK_MAGIC) + FOOTER.size:
        raise DataCorrupt("pack is too short for its footer")
    _count, digest, magic = FOOTER.unpack_from(pack_bytes, len(pack_bytes) - FOOTER.size)
    if magic != PACK_END_MAGIC:
        raise DataCorrupt("pack end magic (ASRPKEND) is damaged")
    return name_for_digest(digest)


def pack_overhead(entries: int) -> int:
    """Bytes a pack spends beside its blobs."""
    return len(PACK_MAGIC) + ENTRY.size * entries + FOOTER.size


class PackBuilder:
    """Accumulates blobs in memory until the pack is sealed and written in one put."""

    def __init__(self) -> None:
        self._parts: list[bytes] = [PACK_MAGIC]
        self._size = len(PACK_MAGIC)
        self.entries: list[PackEntry] = []
        self._part_of: list[int] = []  # entry n's blob is self._parts[self._part_of[n]]
        self._ids: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._ids

    @property
    def size(self) -> int:
        return self._size

    def add(self, kind: int, blob_id: bytes, data: bytes, digest: bytes | None = None) -> None:
        """Buffer a blob. Without ``digest`` its hash is computed by :meth:`seal` (which the
        store runs on its sealing thread, off the receiving path)."""
        self.add_shared(kind, (blob_id,), data, digest)

    def add_shared(self, kind: int, blob_ids: Iterable[bytes], data: bytes, digest: bytes | None = None) -> list[bytes]:
        """Buffer one blob named by several ids (a group frame's members), one trailer entry
        each, all at the same offset; ids already in this pack are skipped, and the blob is
        not added at all when every id is. Returns the ids added."""
        fresh = [i for i in dict.fromkeys(blob_ids) if i not in self._ids]
        if not fresh:
            return []
        part = len(self._parts)
        for blob_id in fresh:
            self.entries.append(PackEntry(kind, blob_id, self._size, len(data), digest or b""))
            self._part_of.append(part)
            self._ids.add(blob_id)
        self._parts.append(data)
        self._size += len(data)
        return fresh

    def _tail(self) -> tuple[bytes, bytes]:
        hashes: dict[int, bytes] = {}  # part -> hash: a shared blob is hashed once
        for n, e in enumerate(self.entries):
            if not e.hash:
                part = self._part_of[n]
                digest = hashes.get(part)
                if digest is None:
                    digest = hashes[part] = blob_hash(self._parts[part])
                self.entries[n] = PackEntry(e.kind, e.id, e.offset, e.length, digest)
        trailer = b"".join(
            ENTRY.pack(e.kind, e.id, e.offset, e.length, e.hash) for e in self.entries
        )
        return trailer, FOOTER.pack(len(self.entries), blake3.blake3(trailer).digest(), PACK_END_MAGIC)

    def seal(self) -> bytes:
        trailer, footer = self._tail()
        return b"".join([*self._parts, trailer, footer])

    def seal_into(self, out: bytearray) -> memoryview:
        """Like :meth:`seal`, assembled in ``out`` (grown if too small) instead of a fresh
        object: the store's sealing thread reuses one buffer for every pack, so sealing does
        not churn 16 MiB allocations through the heap (peak RSS steadier, no fresh pages)."""
        trailer, footer = self._tail()
        size = self._size + len(trailer) + len(footer)
        if len(out) < size:
            out.extend(bytes(size - len(out)))
        view = memoryview(out)
        at = 0
        for part in (*self._parts, trailer, footer):
            view[at:at + len(part)] = part
            at += len(part)
        return view[:size]


def parse_trailer(tail: bytes, pack_size: int) -> list[PackEntry]:
    return parse_tail(tail, pack_size)[0]


def parse_tail(tail: bytes, pack_size: int) -> tuple[list[PackEntry], bytes]:
    """Parse the entries from the last bytes of a pack (``tail`` must hold the whole trailer
    and footer; read ``trailer_length`` bytes or more from the end)."""
    if len(tail) < FOOTER.size:
        raise DataCorrupt("pack is too short for its footer")
    count, digest, magic = FOOTER.unpack_from(tail, len(tail) - FOOTER.size)
    if magic != PACK_END_MAGIC:
        raise DataCorrupt("pack end magic (ASRPKEND) is damaged")
    trailer_len = count * ENTRY.size
    if trailer_len + FOOTER.size > len(tail) or pack_size < pack_overhead(count):
        raise DataCorrupt("pack trailer is longer than the pack")
    start = len(tail) - FOOTER.size - trailer_len
    trailer = tail[start : len(tail) - FOOTER.size]
    if blake3.blake3(trailer).digest() != digest:
        raise DataCorrupt("pack trailer fails its checksum")
    entries = [PackEntry(*ENTRY.unpack_from(trailer, i * ENTRY.size)) for i in range(count)]
    limit = pack_size - FOOTER.size - trailer_len
    for e in entries:
        if e.offset < len(PACK_MAGIC) or e.offset + e.length > limit:
            raise DataCorrupt("pack trailer entry points outside the pack")
    return entries, digest


def read_trailer(read: Callable[[int, int], bytes], pack_size: int) -> tuple[list[PackEntry], bytes]:
    """The entries and trailer digest of a stored pack of ``pack_size`` bytes, reading only
    its tail through ``read(offset, length)``. DataCorrupt says what is wrong: the end
    magic, an impossible entry count, the trailer checksum, an entry outside the pack."""
    if pack_size < len(PACK_MAGIC) + FOOTER.size:
        raise DataCorrupt("pack is too short for its footer")
    guess = min(pack_size, FOOTER.size + 64 * ENTRY.size)  # most trailers in one read
    tail = read(pack_size - guess, guess)
    count = footer_count(tail)
    need = count * ENTRY.size + FOOTER.size
    if need > pack_size - len(PACK_MAGIC):
        raise DataCorrupt(f"pack footer claims {count} entries, more than the pack can hold")
    if need > len(tail):
        tail = read(pack_size - need, need)
    return parse_tail(tail, pack_size)


def footer_count(footer: bytes) -> int:
    """The entry count from a pack's last FOOTER.size bytes, to size the trailer read."""
    if len(footer) < FOOTER.size:
        raise DataCorrupt("pack is too short for its footer")
    count, _digest, magic = FOOTER.unpack_from(footer, len(footer) - FOOTER.size)
    if magic != PACK_END_MAGIC:
        raise DataCorrupt("pack end magic (ASRPKEND) is damaged")
    return int(count)
