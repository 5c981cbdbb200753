"""Integrity: verifying a recovery point end to end, and rebuilding the chunk index from the
packs' trailers.

Verify walks the point's trees; every tree node and chunk frame is re-read and re-hashed
(``fetch_blobs``), and every pack one of them lives in is checked once (:class:`PackChecker`):
``ASRPACK1`` at the start, ``ASRPKEND`` at the end, an entry count the pack can hold, the
BLAKE3 of the trailer equal to the footer's digest, the object's name equal to that digest,
and each index row the point uses equal to the pack's own trailer entry (kind, offset,
length, hash). A damaged pack is reported even when the blobs the point reads from it are
intact: the damage would make an index rebuild lose them.

Rebuild reads only trailers (no blob bytes): the trailer of a pack names every blob in it
with its kind, offset, length and hash, which is all a chunk row holds.

Group frames: each member has its own trailer entry and index row, at the frame's shared
location, so the row checks and the rebuild need nothing special; a shared frame is read
and hashed once per read (``fetch_blobs``), and with ``id_key`` each unencrypted member is
decoded (the frame once, ``decode_chunk`` keeps the last group) and checked against its id.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from asrerrors import DataCorrupt, NotFound
from chunkfmt import ZERO_ID, decode_chunk, parse_header
from cloudsvc.vaultstore import merkle
from cloudsvc.vaultstore.backend import Backend
from cloudsvc.vaultstore.indexdb import Location
from cloudsvc.vaultstore.packfile import PACK_MAGIC, PACK_PREFIX, PackEntry, name_for_digest, read_trailer
from cloudsvc.vaultstore.records import Damage, DiskInfo, PointInfo, RebuildResult, VerifyResult

if TYPE_CHECKING:
    from cloudsvc.vaultstore.store import VaultStore

_WINDOW = 256  # blobs checked together (bounds memory, batches index lookups and reads)
_TRAILERS_CACHED = 32


def read_pack_trailer(backend: Backend, name: str) -> list[PackEntry]:
    """A stored pack's trailer entries. DataCorrupt says what is wrong with the trailer or
    the name; NotFound if the pack is missing."""
    size = backend.stat(name).size
    entries, digest = read_trailer(lambda offset, length: backend.get(name, offset, length), size)
    if name_for_digest(digest) != name:
        raise DataCorrupt("its name does not match its trailer digest")
    return entries


class PackChecker:
    """Checks the packs a verify touches: each pack's structure once, and each index row
    against the pack's trailer entry for that blob."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.checked: set[str] = set()
        self._trailers: OrderedDict[str, dict[bytes, PackEntry] | None] = OrderedDict()

    def _trailer(self, name: str, problems: list[str]) -> dict[bytes, PackEntry] | None:
        try:
            entries = read_pack_trailer(self.backend, name)
        except NotFound:
            problems.append("is missing")
            return None
        except DataCorrupt as exc:
            problems.append(f"trailer unreadable: {exc}")
            return None
        return {e.id: e for e in entries}

    def _structure(self, name: str) -> tuple[list[str], dict[bytes, PackEntry] | None]:
        problems: list[str] = []
        try:
            if self.backend.get(name, 0, len(PACK_MAGIC)) != PACK_MAGIC:
                problems.append("header magic (ASRPACK1) is damaged")
        except NotFound:
            return ["is missing"], None
        return problems, self._trailer(name, problems)

    def check(self, blob_id: bytes, loc: Location) -> list[str]:
        """Problems of ``loc.pack`` as a whole (only the first time it is seen) and of this
        blob's index row against the trailer; each message names the pack."""
        name = loc.pack
        problems: list[str] = []
        if name not in self.checked:
            self.checked.add(name)
            problems, entries = self._structure(name)
            self._remember(name, entries)
        elif name in self._trailers:
            self._trailers.move_to_end(name)
            entries = self._trailers[name]
        else:  # evicted: read again (its structure was reported already)
            entries = self._trailer(name, [])
            self._remember(name, entries)
        out = [f"pack {name}: {p}" for p in problems]
        if entries is None:
            return out
        entry = entries.get(blob_id)
        if entry is None:
            out.append(f"pack {name}: its trailer has no entry for this blob")
        elif (entry.kind, entry.offset, entry.length, entry.hash) != (loc.kind, loc.offset, loc.length, loc.hash):
            out.append(f"pack {name}: the index row (offset {loc.offset}, length {loc.length}) disagrees with "
                       f"the pack's trailer entry (offset {entry.offset}, length {entry.length})")
        return out

    def _remember(self, name: str, entries: dict[bytes, PackEntry] | None) -> None:
        self._trailers[name] = entries
        if len(self._trailers) > _TRAILERS_CACHED:
            self._trailers.popitem(last=False)


def verify_point(store: VaultStore, point: PointInfo, id_key: bytes | None) -> VerifyResult:
    checker = PackChecker(store.backend)
    damage: list[Damage] = []
    blocks = 0
    for disk in point.disks:
        blocks += _verify_disk(store, checker, point.point_id, disk, id_key, damage)
    return VerifyResult(damage, packs_checked=len(checker.checked), blocks_checked=blocks)


def _verify_disk(store: VaultStore, checker: PackChecker, point_id: str, disk: DiskInfo,
                 id_key: bytes | None, damage: list[Damage]) -> int:
    """Append the disk's damage; returns the number of non-zero blocks checked."""
    blocks = merkle.block_count(disk.virtual_size)
    levels = merkle.levels_for(blocks, disk.fanout)
    chunks: list[tuple[int, bytes]] = []  # (block, chunk id)
    nodes: list[tuple[int, bytes]] = []  # (first block covered, node id), read already
    checked = 0

    def report(block: int, blob_id: bytes, what: str) -> None:
        damage.append(Damage(point_id, disk.disk_index, block, blob_id, what))

    def check_packs(refs: list[tuple[int, bytes]], locs: dict[bytes, Location]) -> None:
        for block, blob_id in refs:
            loc = locs.get(blob_id)
            if loc is not None:  # no row: reported as "not in the index" by the reads
                for what in checker.check(blob_id, loc):
                    report(block, blob_id, what)

    def check_nodes() -> None:
        check_packs(nodes, store.db.lookup({n for _, n in nodes}))
        nodes.clear()

    def check_chunks() -> None:
        nonlocal checked
        ids = {c for _, c in chunks}
        locs = store.db.lookup(ids)
        fetched = store.fetch_blobs(ids, locs)
        for block, cid in chunks:
            got = fetched[cid]
            what = got if isinstance(got, str) else _frame_problem(got, cid, id_key)
            if what:
                report(block, cid, what)
        check_packs(chunks, locs)
        checked += len(chunks)
        chunks.clear()

    def walk(nid: bytes, level: int, start: int) -> None:
        if nid == ZERO_ID:
            return
        try:
            node = store._read_node(nid)
            if node.level != level or node.fanout != disk.fanout:
                raise DataCorrupt("tree node level or fanout does not match its position")
        except (DataCorrupt, NotFound) as exc:
            report(start, nid, f"tree node damaged or missing: {exc}")
            return
        nodes.append((start, nid))
        if len(nodes) >= _WINDOW:
            check_nodes()
        step = disk.fanout**level
        for k, child in enumerate(node.ids):
            if level == 0:
                if child != ZERO_ID:
                    chunks.append((start + k, child))
                    if len(chunks) >= _WINDOW:
                        check_chunks()
            else:
                walk(child, level - 1, start + k * step)

    if blocks:
        walk(disk.root, levels - 1, 0)
    check_chunks()
    check_nodes()
    return checked


def _frame_problem(frame: bytes, cid: bytes, id_key: bytes | None) -> str:
    try:
        hdr = parse_header(frame)
        if id_key is not None and not hdr.encrypted:
            decode_chunk(frame, None, expected_id=cid, id_key=id_key)
    except DataCorrupt as exc:
        return f"frame damaged: {exc}"
    return ""


def rebuild_index(store: VaultStore) -> RebuildResult:
    """Replace the chunk and pack tables with what the packs' trailers say.

    Every pack object is listed and its trailer read (and checked: end magic, count,
    checksum, name); a pack whose trailer is unreadable is left out and named in the
    result, the others are indexed. The rows are staged in TEMP tables as the trailers are
    read (memory stays small however large the store), then one transaction swaps them in:
    a reader sees the old index or the new one. Where two packs hold the same blob the pack
    first in name order wins. Every indexed pack is ``live``; rows of packs whose object is
    gone are dropped. Points, sessions and pins are kept as they are (not derivable).
    The caller holds the store's locks with nothing being sealed; other processes must not
    upload to the store meanwhile."""
    db, backend = store.db, store.backend
    db.temp_table("rebuilt_packs", "name TEXT PRIMARY KEY, size INTEGER NOT NULL")
    db.temp_table("rebuilt_chunks", 'id BLOB PRIMARY KEY, kind INTEGER NOT NULL, pack TEXT NOT NULL, '
                  '"offset" INTEGER NOT NULL, length INTEGER NOT NULL, hash BLOB NOT NULL')
    packs = blobs = 0
    damaged: list[str] = []
    try:
        for name in sorted(backend.list(PACK_PREFIX)):
            try:
                size = backend.stat(name).size
                entries = read_pack_trailer(backend, name)
            except (DataCorrupt, NotFound):  # NotFound: deleted since the listing
                damaged.append(name)
                continue
            db.fill_temp("INSERT INTO rebuilt_packs VALUES (?, ?)", [(name, size)])
            blobs += db.fill_temp(
                "INSERT INTO rebuilt_chunks VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(e.id, e.kind, name, e.offset, e.length, e.hash) for e in entries],
            )
            packs += 1
        now = store.clock.now()
        with db.tx() as conn:
            conn.execute("DELETE FROM chunks")
            conn.execute("DELETE FROM packs")
            # Numbered above every session open now: their uploads may be in any of these
            # packs, which per-id protection does not cover (collector rule 3).
            seq = db.next_pack_seq(conn)
            conn.execute("INSERT INTO packs (name, size, state, created_at, seq) "
                         "SELECT name, size, 'live', ?, ? FROM rebuilt_packs", (now, seq))
            conn.execute('INSERT INTO chunks (id, kind, pack, "offset", length, hash) '
                         'SELECT id, kind, pack, "offset", length, hash FROM rebuilt_chunks')
    finally:
        db.drop_temp("rebuilt_packs")
        db.drop_temp("rebuilt_chunks")
    return RebuildResult(packs=packs, blobs=blobs, damaged_packs=damaged)
