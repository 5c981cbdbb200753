"""The cloud's storage account for recovery points: chunks in packs, an index, Merkle points.

Write ordering (each step must be complete before the next begins):

1. Pack row ``writing`` in the index, then ``backend.put`` of the sealed pack (atomic,
   durable), then in one transaction the pack's chunk rows and the pack ``live``.
   A chunk is *stored* only once its row is committed; ``missing`` and ``commit_point``
   trust only rows (plus this process's unsealed pack for ``missing``).
2. ``commit_point`` flushes, refuses if any chunk the point references has no row, writes the
   changed tree nodes, flushes again, and only then inserts the point row. A point row
   therefore never references a blob that is not durably stored and indexed.
3. The caller acknowledges the point to the agent only after ``commit_point`` returns.
4. A blob is deleted only when no live point and no open session references it; a pack object
   is deleted only after the index no longer points into it (see ``collector``).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

import blake3

from asrclock import Clock
from asrerrors import DataCorrupt, NotFound, StateConflict, StorageError
from chunkfmt import ID_SIZE, ZERO_ID, decode_chunk, encode_chunk, parse_header
from cloudsvc.vaultstore import merkle
from cloudsvc.vaultstore.backend import Backend
from cloudsvc.vaultstore.indexdb import IndexDb, Location
from cloudsvc.vaultstore.packfile import (
    ENTRY,
    FOOTER,
    KIND_CHUNK,
    KIND_NODE,
    PACK_PREFIX,
    PackBuilder,
    blob_hash,
    footer_count,
    pack_name,
    parse_trailer,
)
from cloudsvc.vaultstore.records import (
    BlockChanges,
    Damage,
    DiskDelta,
    DiskInfo,
    GcStats,
    PointInfo,
    PointKind,
)
from cloudsvc.vaultstore.retention import RetentionPolicy, points_to_keep

DEFAULT_PACK_SIZE = 16 * 1024 * 1024
_READ_WINDOW = 256  # blocks fetched together: bounds read_frames memory to ~16 MiB
_COALESCE_GAP = 64 * 1024
_MAX_READ = 8 * 1024 * 1024
_MAX_SEALING = 1  # full packs queued for the sealing thread before put_chunks waits


class VaultStore:
    def __init__(
        self,
        backend: Backend,
        index_db_path: str,
        clock: Clock,
        pack_size: int = DEFAULT_PACK_SIZE,
        fanout: int = merkle.DEFAULT_FANOUT,
        session_ttl_s: float = 7 * 86400.0,
        writing_grace_s: float = 3600.0,
        min_dead_fraction: float = 0.1,
    ) -> None:
        if fanout < 2:
            raise ValueError("fanout must be at least 2")
        self.backend = backend
        self.db = IndexDb(index_db_path)
        self.clock = clock
        self.pack_size = pack_size
        self.fanout = fanout
        self.session_ttl_s = session_ttl_s
        self.writing_grace_s = writing_grace_s
        self.min_dead_fraction = min_dead_fraction
        self.lock = threading.RLock()
        self._pack = PackBuilder()
        self._pack_frames: dict[bytes, bytes] = {}
        self._nodes: OrderedDict[bytes, merkle.Node] = OrderedDict()
        # Full packs being sealed in the background (see _hand_off): their blobs are neither
        # indexed nor in self._pack, but must still count as present and be readable.
        self._sealing: list[tuple[PackBuilder, dict[bytes, bytes]]] = []
        self._sealing_lock = threading.Lock()  # the sealer never takes self.lock
        self._seals: deque[Future[None]] = deque()
        self._sealer: ThreadPoolExecutor | None = None  # one thread (see _seal_buffer)
        self._seal_buffer = bytearray()

    def close(self) -> None:
        if self._sealer is not None:
            self._sealer.shutdown(wait=True)
        self.db.close()

    def _buffered(self, blob_id: bytes) -> bool:
        """Whether a blob is held in memory: the open pack, or a pack being sealed."""
        if blob_id in self._pack:
            return True
        with self._sealing_lock:
            return any(blob_id in pack for pack, _ in self._sealing)

    def _buffered_frame(self, blob_id: bytes) -> bytes | None:
        frame = self._pack_frames.get(blob_id)
        if frame is None:
            with self._sealing_lock:
                for _, frames in self._sealing:
                    frame = frames.get(blob_id)
                    if frame is not None:
                        break
        return frame

    # --- upload ------------------------------------------------------------------------
    def missing(self, ids: Iterable[bytes], session_id: str | None = None) -> list[bytes]:
        """Ids not stored, in input order without repeats; ZERO_ID is never missing. With
        ``session_id``, the ids that *are* stored become protected by that session, so a
        garbage collection cannot remove them before the session commits."""
        wanted = list(dict.fromkeys(i for i in ids if i != ZERO_ID))
        with self.lock:
            # Memory first, then the index: a pack's sealer indexes its blobs before it drops
            # them from memory, so this order never misses a blob that is in transit.
            have = {i for i in wanted if self._buffered(i)}
            have |= self.db.present(i for i in wanted if i not in have)
            if session_id is not None:
                self._require_session(session_id)
                self.db.session_protect(session_id, have, self.clock.now())
        return [i for i in wanted if i not in have]

    def begin_session(self, vm_id: str) -> str:
        session_id = "us-" + secrets.token_hex(12)
        self.db.session_open(session_id, vm_id, self.clock.now())
        return session_id

    def end_session(self, session_id: str) -> None:
        self.db.session_close(session_id)

    def _require_session(self, session_id: str) -> str:
        vm = self.db.session_vm(session_id)
        if vm is None:
            raise NotFound(f"upload session {session_id} is not open (ended or expired)")
        return vm

    def put_chunks(self, session_id: str, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Add chunk frames; idempotent for ids already stored. Frames are checked for a sane
        header (the cloud cannot decrypt them) and buffered into the current pack."""
        for cid, frame in items:
            if len(cid) != ID_SIZE or cid == ZERO_ID:
                raise DataCorrupt("a chunk id must be 32 bytes and not the zero-block id")
            parse_header(frame)
        with self.lock:
            self._require_session(session_id)
            # Protect first: from here on a concurrent GC keeps these ids even if they are
            # already stored in a pack that has otherwise gone dead.
            self.db.session_protect(session_id, [c for c, _ in items], self.clock.now())
            buffered = {c for c, _ in items if self._buffered(c)}
            stored = buffered | self.db.present(c for c, _ in items if c not in buffered)
            for cid, frame in items:
                if cid not in stored:
                    self._add_blob(KIND_CHUNK, cid, bytes(frame))
        # Memory bound: wait for the sealing thread outside the lock, so that ``missing``
        # and other uploads are not held up by a pack's write and fsyncs.
        self._wait_seals(_MAX_SEALING)

    def _add_blob(self, kind: int, blob_id: bytes, frame: bytes) -> None:
        if self._buffered(blob_id):
            return
        self._pack.add(kind, blob_id, frame)
        self._pack_frames[blob_id] = frame
        if self._pack.size >= self.pack_size:
            self._hand_off()

    def flush(self) -> None:
        """Make every blob buffered before this call durable and indexed (pack put, then
        index rows); raise if one of their packs failed. Waits outside the lock."""
        with self.lock:
            self._hand_off()
            with self._sealing_lock:
                mine = list(self._seals)
        self._settle(mine)

    def _seal(self) -> None:
        """Seal the open pack and wait until every pack handed off is durable and indexed;
        raise the first failure. Whatever must be durable (a point's commit, a flush) calls
        this, so background sealing never weakens the write ordering in the module doc."""
        self._hand_off()
        self._wait_seals(0)  # the caller holds self.lock: nothing is handed off meanwhile

    def _hand_off(self) -> None:
        """Give the open pack to the sealing thread (hash, put, index) and start a new one, so
        the receiving thread and ``missing`` do not wait for a pack's fsyncs. Callers bound
        the queue with ``_wait_seals`` (put_chunks: after releasing the lock)."""
        if not len(self._pack):
            return
        pack, frames = self._pack, self._pack_frames
        self._pack, self._pack_frames = PackBuilder(), {}
        if self._sealer is None:
            self._sealer = ThreadPoolExecutor(1, thread_name_prefix="pack-sealer")
        with self._sealing_lock:
            self._sealing.append((pack, frames))
            self._seals.append(self._sealer.submit(self._seal_pack, pack))

    def _wait_seals(self, limit: int) -> None:
        """Wait until at most ``limit`` packs are queued for sealing; raise the first failure
        among those this call settled."""
        while True:
            with self._sealing_lock:
                if len(self._seals) <= limit and not (self._seals and self._seals[0].done()):
                    return
                oldest = self._seals[0]
            self._settle([oldest])

    def _settle(self, seals: list[Future[None]]) -> None:
        """Wait for these seals without holding any lock, forget them, and raise the first
        failure among them, even one another caller has already seen: a flush must fail if
        any pack it waited for failed. The failed pack's blobs have left memory, so
        ``missing`` reports them missing again and the agent re-sends them."""
        failure: BaseException | None = None
        for fut in seals:
            exc = fut.exception()
            with self._sealing_lock:
                if fut in self._seals:
                    self._seals.remove(fut)
            failure = failure or exc
        if failure is not None:
            raise failure

    def _seal_pack(self, pack: PackBuilder) -> None:
        """On the sealing thread. Steps in the order of the module doc: row ``writing``,
        durable put, then the chunk rows and ``live`` in one transaction. On failure the
        blobs are dropped from memory: ``missing`` reports them missing again and
        ``commit_point`` refuses a point that references them."""
        try:
            data = pack.seal_into(self._seal_buffer)  # one sealing thread: the buffer is its own
            with data:  # released before the next pack may grow the buffer
                name = pack_name(data)
                self.db.pack_begin(name, len(data), self.clock.now())
                self.backend.put(name, data)
            with self.db.tx() as conn:
                self.db.pack_commit(conn, name, pack.entries, replace=False)
        finally:
            with self._sealing_lock:
                self._sealing = [s for s in self._sealing if s[0] is not pack]

    # --- points ------------------------------------------------------------------------
    def commit_point(
        self,
        session_id: str,
        vm_id: str,
        disks: Sequence[DiskDelta],
        base_point_id: str | None,
        kind: PointKind,
        created_at: float,
    ) -> PointInfo:
        if kind not in ("crash", "app"):
            raise ValueError(f"unknown point kind {kind!r}")
        with self.lock:
            if self._require_session(session_id) != vm_id:
                raise StateConflict(f"upload session {session_id} belongs to another VM")
            base = self.get_point(base_point_id) if base_point_id is not None else None
            if base is not None and base.vm_id != vm_id:
                raise StateConflict(f"base point {base_point_id} belongs to another VM")
            self._seal()
            absent = self._absent(disks)
            if absent:
                raise StorageError(
                    f"{len(absent)} chunks referenced by the new point are not stored",
                    causes=("The upload was interrupted, or a garbage collection removed "
                            "chunks that the agent was told were present.",),
                    action="Ask which chunks are missing again, upload them, and retry.",
                    details=[c.hex() for c in sorted(absent)[:5]],
                )
            infos = []
            for index, delta in enumerate(disks):
                base_disk = base.disks[index] if base and index < len(base.disks) else None
                view = None
                if base_disk is not None:
                    view = merkle.TreeView(
                        self._load_node,
                        base_disk.root,
                        merkle.block_count(base_disk.virtual_size),
                        base_disk.fanout,
                    )
                root = merkle.build_tree(
                    loader=self._load_node,
                    writer=self._write_node,
                    virtual_size=delta.virtual_size,
                    fanout=self.fanout,
                    changes=delta.changes,
                    base=view,
                )
                infos.append(DiskInfo(index, delta.virtual_size, self.fanout, root))
            self._seal()
            point = PointInfo(
                _point_id(vm_id, created_at, kind, infos), vm_id, created_at, kind, tuple(infos)
            )
            existing = self.db.point(point.point_id)
            if existing is not None:
                return existing  # a retried commit after a lost acknowledgement
            self.db.point_insert(point)
            return point

    def _absent(self, disks: Sequence[DiskDelta]) -> set[bytes]:
        """Referenced chunk ids that are not stored, checked in batches so that memory stays
        small however many blocks a point names (an initial point names them all)."""
        absent: set[bytes] = set()
        batch: set[bytes] = set()
        for d in disks:
            ids = d.changes.ids() if isinstance(d.changes, BlockChanges) else iter(d.changes.values())
            for c in ids:
                if c != ZERO_ID:
                    batch.add(c)
                if len(batch) >= 8192:
                    absent |= batch - self.db.present(batch)
                    batch = set()
        return absent | (batch - self.db.present(batch))

    def _write_node(self, nid: bytes, data: bytes) -> None:
        if self._buffered(nid) or self.db.present([nid]):
            return
        self._add_blob(KIND_NODE, nid, encode_chunk(data, None))

    def _load_node(self, nid: bytes) -> merkle.Node:
        node = self._nodes.get(nid)
        if node is not None:
            self._nodes.move_to_end(nid)
            return node
        node = self._read_node(nid)
        self._nodes[nid] = node
        if len(self._nodes) > 128:
            self._nodes.popitem(last=False)
        return node

    def _read_node(self, nid: bytes) -> merkle.Node:
        frame = self._buffered_frame(nid)
        if frame is None:
            loc = self.db.lookup([nid]).get(nid)
            if loc is None:
                raise DataCorrupt(f"tree node {nid.hex()} is not in the index")
            frame = self.backend.get(loc.pack, loc.offset, loc.length)
            if blob_hash(frame) != loc.hash:
                raise DataCorrupt(f"tree node {nid.hex()} does not match its stored hash")
        data = decode_chunk(frame, None)
        if merkle.node_id(data) != nid:
            raise DataCorrupt(f"tree node {nid.hex()} does not match its id")
        return merkle.decode_node(data)

    def list_points(self, vm_id: str) -> list[PointInfo]:
        return self.db.points(vm_id)

    def get_point(self, point_id: str) -> PointInfo:
        point = self.db.point(point_id)
        if point is None:
            raise NotFound(f"recovery point {point_id} does not exist")
        return point

    def _disk(self, point_id: str, disk_index: int) -> DiskInfo:
        point = self.get_point(point_id)
        if not 0 <= disk_index < len(point.disks):
            raise NotFound(f"recovery point {point_id} has no disk {disk_index}")
        return point.disks[disk_index]

    def delete_point(self, point_id: str) -> None:
        """Forget a point; its data is reclaimed by the next :meth:`gc`."""
        if not self.db.point_delete(point_id):
            raise NotFound(f"recovery point {point_id} does not exist")

    def apply_retention(self, vm_id: str, policy: RetentionPolicy, pinned: Iterable[str] = ()) -> list[str]:
        """Delete the VM's points the policy no longer keeps, never one in ``pinned`` (points a
        failover still needs); returns their ids."""
        points = self.list_points(vm_id)
        keep = points_to_keep(points, policy, self.clock.now()) | set(pinned)
        doomed = [p.point_id for p in points if p.point_id not in keep]
        for pid in doomed:
            self.db.point_delete(pid)
        return doomed

    # --- reading -----------------------------------------------------------------------
    def block_map(self, point_id: str, disk_index: int) -> Iterator[tuple[int, bytes]]:
        disk = self._disk(point_id, disk_index)
        return merkle.iter_blocks(
            self._read_node, disk.root, merkle.block_count(disk.virtual_size), disk.fanout
        )

    def read_frames(self, point_id: str, disk_index: int) -> Iterator[tuple[int, bytes | None]]:
        """(block index, stored frame) for every block, None for zero blocks, in order. Each
        frame's stored hash is checked; reads are batched per pack."""
        window: list[tuple[int, bytes]] = []
        for block, cid in self.block_map(point_id, disk_index):
            window.append((block, cid))
            if len(window) >= _READ_WINDOW:
                yield from self._read_window(point_id, disk_index, window)
                window = []
        yield from self._read_window(point_id, disk_index, window)

    def _read_window(
        self, point_id: str, disk_index: int, window: list[tuple[int, bytes]]
    ) -> Iterator[tuple[int, bytes | None]]:
        fetched = self.fetch_blobs({c for _, c in window if c != ZERO_ID})
        for block, cid in window:
            if cid == ZERO_ID:
                yield block, None
                continue
            got = fetched[cid]
            if isinstance(got, str):
                raise DataCorrupt(
                    f"point {point_id} disk {disk_index} block {block}: chunk {cid.hex()} {got}"
                )
            yield block, got

    def fetch_blobs(self, ids: set[bytes]) -> dict[bytes, bytes | str]:
        """Stored bytes of each blob, hash-checked; a string says what is wrong instead.
        Neighbouring blobs of a pack are read with one ranged get."""
        locs = self.db.lookup(ids)
        out: dict[bytes, bytes | str] = {i: "is not in the index" for i in ids if i not in locs}
        by_pack: dict[str, list[tuple[bytes, Location]]] = {}
        for cid, loc in locs.items():
            by_pack.setdefault(loc.pack, []).append((cid, loc))
        for pack, members in by_pack.items():
            members.sort(key=lambda m: m[1].offset)
            run: list[tuple[bytes, Location]] = []
            for member in members:
                if run:
                    start = run[0][1].offset
                    end = run[-1][1].offset + run[-1][1].length
                    loc = member[1]
                    too_far = loc.offset - end > _COALESCE_GAP
                    if too_far or loc.offset + loc.length - start > _MAX_READ:
                        self._fetch_run(pack, run, out)
                        run = []
                run.append(member)
            self._fetch_run(pack, run, out)
        return out

    def _fetch_run(
        self, pack: str, run: list[tuple[bytes, Location]], out: dict[bytes, bytes | str]
    ) -> None:
        if not run:
            return
        start = run[0][1].offset
        end = max(loc.offset + loc.length for _, loc in run)
        try:
            data = self.backend.get(pack, start, end - start)
        except NotFound:
            for cid, _ in run:
                out[cid] = f"is in pack {pack}, which is missing"
            return
        for cid, loc in run:
            frame = data[loc.offset - start : loc.offset - start + loc.length]
            if len(frame) != loc.length:
                out[cid] = f"is truncated in pack {pack}"
            elif blob_hash(frame) != loc.hash:
                out[cid] = f"does not match its stored hash (pack {pack} offset {loc.offset})"
            else:
                out[cid] = frame

    # --- integrity ---------------------------------------------------------------------
    def verify(self, point_id: str, id_key: bytes | None = None) -> list[Damage]:
        """Re-read and re-hash every tree node and chunk frame the point references. With
        ``id_key`` (unencrypted VMs), unencrypted frames are also decoded and their content
        checked against the chunk id."""
        point = self.get_point(point_id)
        damage: list[Damage] = []
        for disk in point.disks:
            damage += self._verify_disk(point_id, disk, id_key)
        return damage

    def _verify_disk(self, point_id: str, disk: DiskInfo, id_key: bytes | None) -> list[Damage]:
        blocks = merkle.block_count(disk.virtual_size)
        levels = merkle.levels_for(blocks, disk.fanout)
        damage: list[Damage] = []
        pending: list[tuple[int, bytes]] = []

        def check_chunks() -> None:
            fetched = self.fetch_blobs({c for _, c in pending})
            for block, cid in pending:
                got = fetched[cid]
                what = got if isinstance(got, str) else _frame_problem(got, cid, id_key)
                if what:
                    damage.append(Damage(point_id, disk.disk_index, block, cid, what))
            pending.clear()

        def walk(nid: bytes, level: int, start: int) -> None:
            if nid == ZERO_ID:
                return
            try:
                node = self._read_node(nid)
                if node.level != level or node.fanout != disk.fanout:
                    raise DataCorrupt("tree node level or fanout does not match its position")
            except (DataCorrupt, NotFound) as exc:
                what = f"tree node damaged or missing: {exc}"
                damage.append(Damage(point_id, disk.disk_index, start, nid, what))
                return
            step = disk.fanout**level
            for k, child in enumerate(node.ids):
                if level == 0:
                    if child != ZERO_ID:
                        pending.append((start + k, child))
                        if len(pending) >= _READ_WINDOW:
                            check_chunks()
                else:
                    walk(child, level - 1, start + k * step)

        if blocks:
            walk(disk.root, levels - 1, 0)
        check_chunks()
        return damage

    # --- space -------------------------------------------------------------------------
    def gc(self) -> GcStats:
        from cloudsvc.vaultstore.collector import collect

        with self.lock:
            self._seal()
            self._nodes.clear()
            return collect(self)

    def storage_bytes(self) -> int:
        """Bytes of pack objects the index knows about (live, being written or deleted)."""
        return self.db.total_pack_bytes()

    def rebuild_index(self) -> int:
        """Re-create chunk rows from the packs' own trailers (after losing or damaging the
        index). Points and sessions are not in packs and are kept as they are."""
        count = 0
        with self.lock:
            for name in list(self.backend.list(PACK_PREFIX)):
                size = self.backend.stat(name).size
                footer = self.backend.get(name, max(0, size - FOOTER.size))
                n = footer_count(footer)
                tail_len = min(size, n * ENTRY.size + FOOTER.size)
                entries = parse_trailer(self.backend.get(name, size - tail_len), size)
                self.db.pack_begin(name, size, self.clock.now())
                with self.db.tx() as conn:
                    self.db.pack_commit(conn, name, entries, replace=False)
                count += 1
        return count


def _frame_problem(frame: bytes, cid: bytes, id_key: bytes | None) -> str:
    try:
        hdr = parse_header(frame)
        if id_key is not None and not hdr.encrypted:
            decode_chunk(frame, None, expected_id=cid, id_key=id_key)
    except DataCorrupt as exc:
        return f"frame damaged: {exc}"
    return ""


def _point_id(vm_id: str, created_at: float, kind: str, disks: list[DiskInfo]) -> str:
    """Stable and content-derived: the same commit retried yields the same id."""
    h = blake3.blake3(f"{vm_id}\0{created_at!r}\0{kind}".encode())
    for d in disks:
        h.update(d.virtual_size.to_bytes(8, "little") + d.fanout.to_bytes(4, "little") + d.root)
    stamp = datetime.fromtimestamp(created_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"rp-{stamp}-{h.hexdigest()[:12]}"
