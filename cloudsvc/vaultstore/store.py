"""The cloud's storage account for recovery points: chunks in packs, an index, Merkle points.

Write ordering (each step must be complete before the next begins):

1. Pack row ``writing`` in the index, then ``backend.put`` of the sealed pack (atomic,
   durable), then in one transaction the pack's chunk rows and the pack ``live``.
   A chunk is *stored* only once its row is committed; ``missing`` and ``commit_point``
   trust only rows (plus this process's unsealed packs for ``missing``). A group frame
   (several chunks in one frame) is one blob with a row per member, committed together;
   a member found stored is protected, then checked again, exactly like a single chunk's id.
2. ``commit_point`` pins its base point, flushes, and checks that every chunk it references
   is stored: one in a pack sealed after its session opened is kept by age (collector rule
   3), any other is protected by the session *before* it is checked again. It writes the
   changed tree nodes (an existing node it reuses is protected the same way), flushes
   again, and only then inserts the point row, in a transaction that still finds the
   session open. A point row therefore never references a blob that is not durably stored
   and indexed, and nothing it references can be collected between the check and the
   insert.
3. The caller acknowledges the point to the agent only after ``commit_point`` returns.
4. A blob is deleted only when no live point and no open session references it; a pack object
   is deleted only after the index no longer points into it (see ``collector``, which runs
   without the store's lock).
5. Retention deletes a point only when no pin is in force on it (see ``pins``): exports,
   verifies and block maps pin the point they read, so they finish or fail with NotFound,
   never with a false DataCorrupt.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import TypeVar

import blake3

from asrclock import Clock
from asrerrors import AsrError, DataCorrupt, NotFound, StateConflict, StorageError
from chunkfmt import ID_SIZE, ZERO_ID, decode_chunk, encode_chunk, parse_header
from cloudsvc.vaultstore import merkle
from cloudsvc.vaultstore.backend import Backend, CheckedBackend
from cloudsvc.vaultstore.indexdb import IndexDb, IndexLocation, Location, destroy_index
from cloudsvc.vaultstore.packfile import KIND_CHUNK, KIND_NODE, PACK_PREFIX, PackBuilder, blob_hash, pack_name
from cloudsvc.vaultstore.pins import DEFAULT_LEASE_S, PinKeeper
from cloudsvc.vaultstore.records import (
    BlockChanges,
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

DEFAULT_PACK_SIZE = 16 * 1024 * 1024
# An upload session idle this long is closed by the next collection (its agent died or gave
# up; a cycle in progress calls the store every few seconds). While open, a session keeps every
# pack sealed after it began from collection (protection by age, collector rule 3), so a dead
# session must not last long: it defers the reclaiming of the whole store's newer packs.
DEFAULT_SESSION_TTL_S = 3600.0
# Object name prefixes this store owns in its storage account (what ``destroy`` removes).
# Anything else there (the failover's recovered disks on a local directory) is not the store's.
OWNED_PREFIXES = (PACK_PREFIX,)
_READ_WINDOW = 256  # blocks fetched together: bounds read_frames memory to ~16 MiB
_COALESCE_GAP = 64 * 1024
_MAX_READ = 8 * 1024 * 1024
_MAX_SEALING = 1  # full packs queued for the sealing thread before put_chunks waits
_PROTECT_BATCH = 8192
# A session in use has its touched_at written at most once per this share of its lifetime
# (not on every call: most calls of a cycle now write nothing else), for this many sessions.
_TOUCH_EVERY = 0.05
_TOUCHED_SESSIONS = 4096
_T = TypeVar("_T")


class VaultStore:
    def __init__(
        self,
        backend: Backend,
        index: IndexLocation,
        clock: Clock,
        pack_size: int = DEFAULT_PACK_SIZE,
        fanout: int = merkle.DEFAULT_FANOUT,
        session_ttl_s: float = DEFAULT_SESSION_TTL_S,
        writing_grace_s: float = 3600.0,
        min_dead_fraction: float = 0.1,
        pin_lease_s: float = DEFAULT_LEASE_S,
        pin_renew_s: float | None = None,
    ) -> None:
        """``pin_lease_s`` (on ``clock``) is how long a pin of a process that died keeps its
        point; a live holder renews it every ``pin_renew_s`` real seconds (default a fifth
        of the lease). See ``pins``."""
        if fanout < 2:
            raise ValueError("fanout must be at least 2")
        # Every backend is held to the error contract (OSError -> StorageError/DiskFull).
        self.backend: Backend = backend if isinstance(backend, CheckedBackend) else CheckedBackend(backend)
        self.index = index
        self.db = IndexDb(index)
        self.clock = clock
        self.pack_size = pack_size
        self.fanout = fanout
        self.session_ttl_s = session_ttl_s
        self.writing_grace_s = writing_grace_s
        self.min_dead_fraction = min_dead_fraction
        self.lock = threading.RLock()  # uploads and commits of this process; not the collector
        self._gc_lock = threading.Lock()  # one collection (or index rebuild) at a time
        # (pack, offset) of partly dead group frames the collector found it cannot regroup
        # (encrypted): packs never change, so their headers need not be read again
        self.sealed_groups: set[tuple[str, int]] = set()
        self._pins = PinKeeper(self.db, clock, pin_lease_s, pin_renew_s or pin_lease_s / 5)
        self._closed = False
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
        # session -> when this process last wrote its touched_at (see _touch)
        self._touched: dict[str, float] = {}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pins.stop()
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
        ``session_id``, an id reported present is protected by that session first (rule 3
        of the collector's doc): it is checked, protected, and checked again, so it cannot be
        collected before the session commits (one a collection removed in between is
        reported missing). An id reported missing is not protected: the session sends it,
        into a pack sealed after the session opened, which protection by age keeps."""
        wanted = list(dict.fromkeys(i for i in ids if i != ZERO_ID))
        with self.lock:
            if session_id is not None:
                self._require_session(session_id)
                self._touch(session_id)
            have = self._stored(wanted)
            if session_id is not None and have:
                self.db.session_protect(session_id, have, self.clock.now())
                have = self._stored(have)
        return [i for i in wanted if i not in have]

    def _stored(self, ids: Iterable[bytes]) -> set[bytes]:
        """Which of ``ids`` are stored or buffered. Memory first, then the index: a pack's
        sealer indexes its blobs before it drops them from memory, so this order never
        misses a blob that is in transit."""
        ids = list(ids)
        have = {i for i in ids if self._buffered(i)}
        if len(have) < len(ids):
            have |= self.db.present(i for i in ids if i not in have)
        return have

    def _touch(self, session_id: str) -> None:
        """Under ``self.lock``: keep the session from expiring while it is in use, writing
        its ``touched_at`` at most every ``_TOUCH_EVERY`` of its lifetime."""
        now = self.clock.now()
        if now - self._touched.get(session_id, float("-inf")) < self.session_ttl_s * _TOUCH_EVERY:
            return
        self.db.session_touch(session_id, now)
        if len(self._touched) > _TOUCHED_SESSIONS:   # sessions that never ended (their agent died)
            self._touched.clear()
        self._touched[session_id] = now

    def begin_session(self, vm_id: str) -> str:
        session_id = "us-" + secrets.token_hex(12)
        self.db.session_open(session_id, vm_id, self.clock.now())
        return session_id

    def end_session(self, session_id: str) -> None:
        with self.lock:
            self._touched.pop(session_id, None)
        self.db.session_close(session_id)

    def _require_session(self, session_id: str) -> str:
        vm = self.db.session_vm(session_id)
        if vm is None:
            raise NotFound(f"upload session {session_id} is not open (ended or expired)")
        return vm

    def put_chunks(self, session_id: str, items: Sequence[tuple[bytes, bytes]],
                   groups: Sequence[bytes] = ()) -> int:
        """Add chunk frames ``items`` (chunk id, frame) and group frames ``groups`` (each
        names its members in its table); idempotent for ids already stored. Frames are
        checked for a sane header (the cloud cannot decrypt them) and buffered into the
        current pack. A group frame is stored once, with a trailer entry and an index row
        per member; it is not stored at all when every member is stored or buffered already
        (a member stored elsewhere keeps its row). Returns the number of chunks received
        (items plus group members)."""
        for cid, frame in items:
            if len(cid) != ID_SIZE or cid == ZERO_ID:
                raise DataCorrupt("a chunk id must be 32 bytes and not the zero-block id")
            parse_header(frame)
        members: list[list[bytes]] = []
        for frame in groups:
            hdr = parse_header(frame)
            if not hdr.group:
                raise DataCorrupt("a group frame was sent without its group flag (it names no chunk id)")
            ids = hdr.ids()
            if ZERO_ID in ids:
                raise DataCorrupt("a group frame names the zero-block id as a member")
            members.append(ids)
        every = [c for c, _ in items] + [c for ids in members for c in ids]
        with self.lock:
            self._require_session(session_id)
            self._touch(session_id)
            # What is stored already is trusted only once protected (and found again): from
            # then on a concurrent GC keeps it even in a pack that has otherwise gone dead.
            # What is added goes into a pack sealed after the session opened (kept by age).
            stored = self._stored(every)
            if stored:
                self.db.session_protect(session_id, stored, self.clock.now())
                stored = self._stored(stored)
            for cid, frame in items:
                if cid not in stored:
                    self._add_blob(KIND_CHUNK, cid, bytes(frame))
            for ids, frame in zip(members, groups, strict=True):
                if not stored.issuperset(ids):
                    self._add_shared(KIND_CHUNK, ids, bytes(frame))
        # Memory bound: wait for the sealing thread outside the lock, so that ``missing``
        # and other uploads are not held up by a pack's write and fsyncs.
        self._wait_seals(_MAX_SEALING)
        return len(every)

    def _add_blob(self, kind: int, blob_id: bytes, frame: bytes) -> None:
        if self._buffered(blob_id):
            return
        self._add_shared(kind, [blob_id], frame)

    def _add_shared(self, kind: int, blob_ids: list[bytes], frame: bytes) -> None:
        """Buffer one frame under every id in ``blob_ids`` (a group's members), unless each
        is buffered already; the ids get one trailer entry each, pointing at the one copy."""
        if all(self._buffered(i) for i in blob_ids):
            return
        for blob_id in self._pack.add_shared(kind, blob_ids, frame):
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
        ``commit_point`` refuses a point that references them. A failure is an AsrError
        (a full disk ``DiskFull``, from the backend or the index), raised to the caller
        that settles this seal."""
        try:
            with self._seal_buffer_view(pack) as data:
                name = pack_name(data)
                self.db.pack_begin(name, len(data), self.clock.now())
                self.backend.put(name, data)
            with self.db.tx() as conn:
                self.db.pack_commit(conn, name, pack.entries, replace=False)
        except AsrError:
            raise
        except Exception as exc:  # the error contract: never a raw exception to the caller
            raise StorageError(f"sealing a pack failed: {exc.__class__.__name__}: {exc}") from exc
        finally:
            with self._sealing_lock:
                self._sealing = [s for s in self._sealing if s[0] is not pack]

    @contextmanager
    def _seal_buffer_view(self, pack: PackBuilder) -> Iterator[memoryview]:
        """The sealed pack in the reused buffer (one sealing thread: the buffer is its own),
        released before the next pack may grow the buffer, also when the put failed and its
        traceback keeps frames (and their views of the buffer) alive."""
        try:
            data = pack.seal_into(self._seal_buffer)
        except BufferError:
            # A failed put's traceback (kept by whoever saw the error) can still hold a view
            # of the buffer, which then cannot grow: start a new one.
            self._seal_buffer = bytearray()
            data = pack.seal_into(self._seal_buffer)
        try:
            yield data
        finally:
            data.release()

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
            # The base is pinned for the whole commit: the new tree shares its subtrees, and
            # they must not go away before the new point's row exists.
            base_pin: AbstractContextManager[PointInfo | None] = (
                self.pin(base_point_id, f"commit {session_id}") if base_point_id is not None
                else nullcontext(None))
            with base_pin as base:
                if base is not None and base.vm_id != vm_id:
                    raise StateConflict(f"base point {base_point_id} belongs to another VM")
                return self._commit(session_id, vm_id, disks, base, kind, created_at)

    def _commit(self, session_id: str, vm_id: str, disks: Sequence[DiskDelta], base: PointInfo | None,
                kind: PointKind, created_at: float) -> PointInfo:
        self._seal()
        absent = self._absent(session_id, disks)
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
                writer=self._node_writer(session_id),
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
        self.db.point_insert(point, session_id)
        return point

    def _absent(self, session_id: str, disks: Sequence[DiskDelta]) -> set[bytes]:
        """Referenced chunk ids that are not stored, checked in batches so that memory stays
        small however many blocks a point names (an initial point names them all). An id in
        a pack sealed after the session opened is kept by age while the session is open (the
        point's row is inserted only if it still is); any other id is protected by the
        session and then checked again: a collection either removed it before (it is
        reported absent) or keeps it until the point row exists."""
        absent: set[bytes] = set()
        batch: set[bytes] = set()
        opened = self.db.session_seq(session_id)
        if opened is None:
            raise NotFound(f"upload session {session_id} is not open (ended or expired)")

        def check() -> None:
            seqs = self.db.pack_seqs(batch)
            absent.update(batch - seqs.keys())
            older = [i for i, seq in seqs.items() if seq <= opened]
            if older:
                self.db.session_protect(session_id, older, self.clock.now())
                absent.update(set(older) - self.db.present(older))
            batch.clear()

        for d in disks:
            ids = d.changes.ids() if isinstance(d.changes, BlockChanges) else iter(d.changes.values())
            for c in ids:
                if c != ZERO_ID:
                    batch.add(c)
                if len(batch) >= _PROTECT_BATCH:
                    check()
        check()
        return absent

    def _node_writer(self, session_id: str) -> Callable[[bytes, bytes], None]:
        def write(nid: bytes, data: bytes) -> None:
            if self._buffered(nid):
                return
            if self.db.present([nid]):
                # Reusing a stored node: protect it, then trust it only if it is still there
                # (the same protect-then-check as for chunks in ``_absent``).
                self.db.session_protect(session_id, [nid], self.clock.now())
                if self.db.present([nid]):
                    return
            self._add_blob(KIND_NODE, nid, encode_chunk(data, None))

        return write

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
            got = self.fetch_blobs({nid})[nid]
            if isinstance(got, str):
                raise DataCorrupt(f"tree node {nid.hex()} {got}")
            frame = got
        data = decode_chunk(frame, None)
        if merkle.node_id(data) != nid:
            raise DataCorrupt(f"tree node {nid.hex()} does not match its id")
        return merkle.decode_node(data)

    def list_points(self, vm_id: str | None = None) -> list[PointInfo]:
        """The points of one VM, or of every VM (to find points the cloud's metadata does
        not know, such as a commit it refused), oldest first."""
        return self.db.points(vm_id)

    def get_point(self, point_id: str) -> PointInfo:
        point = self.db.point(point_id)
        if point is None:
            raise NotFound(f"recovery point {point_id} does not exist")
        return point

    def _disk(self, point: PointInfo, disk_index: int) -> DiskInfo:
        if not 0 <= disk_index < len(point.disks):
            raise NotFound(f"recovery point {point.point_id} has no disk {disk_index}")
        return point.disks[disk_index]

    def delete_point(self, point_id: str, force: bool = False) -> None:
        """Forget a point; its data is reclaimed by the next :meth:`gc`. A pinned point is
        refused (StateConflict naming the holders) unless ``force``, which also drops its
        pins."""
        now = self.clock.now()
        with self.db.tx() as conn:
            holders = self.db.pin_holders(conn, point_id, now)
            if holders and not force:
                raise StateConflict(
                    f"recovery point {point_id} is in use by {', '.join(holders)}",
                    action="Wait for those operations to finish (or release the failover's pin), then retry.",
                )
            if not self.db.point_delete(conn, point_id):
                raise NotFound(f"recovery point {point_id} does not exist")
            conn.execute("DELETE FROM pins WHERE point_id = ?", (point_id,))

    def apply_retention(self, vm_id: str, policy: RetentionPolicy, pinned: Iterable[str] = ()) -> list[str]:
        """Delete the VM's points the policy no longer keeps, never one in ``pinned`` (points a
        failover still needs) nor one with a pin in force; returns the ids deleted."""
        points = self.list_points(vm_id)
        now = self.clock.now()
        keep = points_to_keep(points, policy, now) | set(pinned)
        deleted = []
        for point in points:
            if point.point_id in keep:
                continue
            # The pin check and the delete are one transaction: a pin taken before it is
            # seen, a pin taken after it finds the point gone (see ``pins``).
            with self.db.tx() as conn:
                self._pins.renew_in(conn, now)
                if self.db.pin_holders(conn, point.point_id, now):
                    continue
                if self.db.point_delete(conn, point.point_id):
                    deleted.append(point.point_id)
        return deleted

    # --- pins --------------------------------------------------------------------------
    @contextmanager
    def pin(self, point_id: str, holder: str) -> Iterator[PointInfo]:
        """Keep ``point_id`` from being deleted by retention while the block runs; yields the
        point. NotFound (ASR-0040) if it no longer exists. ``holder`` says who, for messages
        (e.g. ``"export rp-… disk 0"``). The pin is a leased row in the index DB, renewed
        while held; a process killed while holding it stops renewing and the lease expires."""
        pin, point = self._pins.take(point_id, holder)
        try:
            yield point
        finally:
            if not self._closed:
                self._pins.drop(pin)

    def pin_until_released(self, point_id: str, holder: str) -> PointInfo:
        """Pin a point with no lease, until :meth:`release` of ``holder`` (a recovered VM's
        point, kept for the VM's life). Idempotent per holder and point. NotFound if the
        point does not exist."""
        return self._pins.take(point_id, holder, leased=False)[1]

    def release(self, holder: str) -> int:
        """Drop every pin of ``holder``; returns how many there were."""
        return self.db.pins_release(holder)

    def pins(self, point_id: str | None = None) -> list[PinInfo]:
        """The pins in force now, of one point or all."""
        return self.db.pins(self.clock.now(), point_id)

    # --- reading -----------------------------------------------------------------------
    def block_map(self, point_id: str, disk_index: int) -> Iterator[tuple[int, bytes]]:
        """(block index, chunk id) of every block of a disk, ZERO_ID for zero blocks. The
        point is pinned while the iterator runs; NotFound at once if it does not exist."""
        self._disk(self.get_point(point_id), disk_index)
        return self._pinned(point_id, f"block map {point_id} disk {disk_index}",
                            lambda point: self._blocks(self._disk(point, disk_index)))

    def _blocks(self, disk: DiskInfo) -> Iterator[tuple[int, bytes]]:
        return merkle.iter_blocks(
            self._read_node, disk.root, merkle.block_count(disk.virtual_size), disk.fanout
        )

    def _pinned(self, point_id: str, holder: str, run: Callable[[PointInfo], Iterator[_T]]) -> Iterator[_T]:
        with self.pin(point_id, holder) as point:
            yield from run(point)

    def read_frames(self, point_id: str, disk_index: int) -> Iterator[tuple[int, bytes, bytes | None]]:
        """(block index, chunk id, stored frame) for every block, in order; (block, ZERO_ID,
        None) for zero blocks. A group frame is yielded for each of its members, as the *same*
        ``bytes`` object for consecutive blocks, so ``decode_chunk(frame, key, chunk=id)``
        decodes it once. Each frame's stored hash is checked; reads are batched per pack.
        The point is pinned while the iterator runs (an export completes even if retention
        wants the point meanwhile); NotFound at once if it does not exist."""
        self._disk(self.get_point(point_id), disk_index)
        return self._pinned(point_id, f"export {point_id} disk {disk_index}",
                            lambda point: self._frames(point, disk_index))

    def _frames(self, point: PointInfo, disk_index: int) -> Iterator[tuple[int, bytes, bytes | None]]:
        window: list[tuple[int, bytes]] = []
        last: list[bytes] = []  # the last frame yielded, carried across windows
        for block, cid in self._blocks(self._disk(point, disk_index)):
            window.append((block, cid))
            if len(window) >= _READ_WINDOW:
                yield from self._read_window(point.point_id, disk_index, window, last)
                window = []
        yield from self._read_window(point.point_id, disk_index, window, last)

    def _read_window(
        self, point_id: str, disk_index: int, window: list[tuple[int, bytes]], last: list[bytes]
    ) -> Iterator[tuple[int, bytes, bytes | None]]:
        fetched = self.fetch_blobs({c for _, c in window if c != ZERO_ID})
        for block, cid in window:
            if cid == ZERO_ID:
                yield block, cid, None
                continue
            got = fetched[cid]
            if isinstance(got, str):
                raise DataCorrupt(
                    f"point {point_id} disk {disk_index} block {block}: chunk {cid.hex()} {got}"
                )
            if last and got is not last[0] and len(got) == len(last[0]) and got == last[0]:
                got = last[0]  # a group frame that spans two windows: the object seen already
            last[:] = [got]
            yield block, cid, got

    def fetch_blobs(self, ids: set[bytes], locs: dict[bytes, Location] | None = None) -> dict[bytes, bytes | str]:
        """Stored bytes of each blob, hash-checked; a string says what is wrong instead.
        Neighbouring blobs of a pack are read with one ranged get. ``locs``: their index
        rows, when the caller has looked them up already."""
        if locs is None:
            locs = self.db.lookup(ids)
        out: dict[bytes, bytes | str] = {i: "is not in the index" for i in ids if i not in locs}
        gone = self._fetch_located(locs, out)
        if gone:
            # A collection may have repacked these blobs (moving their rows, then deleting
            # the old pack) between the lookup and the read: follow their rows once.
            moved = {i: loc for i, loc in self.db.lookup(gone).items() if loc.pack != locs[i].pack}
            self._fetch_located(moved, out)
        return out

    def _fetch_located(self, locs: dict[bytes, Location], out: dict[bytes, bytes | str]) -> set[bytes]:
        """Fetch blobs by location into ``out``; returns the ids whose pack was missing."""
        gone: set[bytes] = set()
        by_pack: dict[str, list[tuple[bytes, Location]]] = {}
        for cid, loc in locs.items():
            by_pack.setdefault(loc.pack, []).append((cid, loc))
        for pack, members in by_pack.items():
            members.sort(key=lambda m: m[1].offset)
            run: list[tuple[bytes, Location]] = []
            for member in members:
                if run and member[1].offset != run[-1][1].offset:  # a shared blob stays in one run
                    start = run[0][1].offset
                    end = run[-1][1].offset + run[-1][1].length
                    loc = member[1]
                    too_far = loc.offset - end > _COALESCE_GAP
                    if too_far or loc.offset + loc.length - start > _MAX_READ:
                        gone |= self._fetch_run(pack, run, out)
                        run = []
                run.append(member)
            gone |= self._fetch_run(pack, run, out)
        return gone

    def _fetch_run(
        self, pack: str, run: list[tuple[bytes, Location]], out: dict[bytes, bytes | str]
    ) -> set[bytes]:
        """Read one range of a pack. Ids at the same location (a group frame's members) get
        the same ``bytes`` object, sliced and hash-checked once."""
        if not run:
            return set()
        start = run[0][1].offset
        end = max(loc.offset + loc.length for _, loc in run)
        try:
            data = self.backend.get(pack, start, end - start)
        except NotFound:
            for cid, _ in run:
                out[cid] = f"is in pack {pack}, which is missing"
            return {cid for cid, _ in run}
        seen: dict[tuple[int, int, bytes], bytes | str] = {}
        for cid, loc in run:
            key = (loc.offset, loc.length, loc.hash)
            got = seen.get(key)
            if got is None:
                frame = data[loc.offset - start : loc.offset - start + loc.length]
                if len(frame) != loc.length:
                    got = f"is truncated in pack {pack}"
                elif blob_hash(frame) != loc.hash:
                    got = f"does not match its stored hash (pack {pack} offset {loc.offset})"
                else:
                    got = frame
                seen[key] = got
            out[cid] = got
        return set()

    # --- integrity ---------------------------------------------------------------------
    def verify(self, point_id: str, id_key: bytes | None = None) -> VerifyResult:
        """Re-read and re-hash every tree node and chunk frame the point references, and check
        every pack they live in (magic at both ends, trailer checksum, name = trailer digest,
        index rows = trailer entries). With ``id_key`` (unencrypted VMs), unencrypted frames
        are also decoded and their content checked against the chunk id. The point is
        pinned meanwhile; NotFound if it does not exist."""
        from cloudsvc.vaultstore.integrity import verify_point

        with self.pin(point_id, f"verify {point_id}") as point:
            return verify_point(self, point, id_key)

    def rebuild_index(self) -> RebuildResult:
        """Rebuild the chunk and pack tables from the packs' own trailers, after the index
        lost or damaged them. Points, sessions and pins are *not* derivable from the packs
        (a point's root and facts live only in the index; the cloud's metadata DB records
        the same points) and are kept as they are. See ``integrity.rebuild_index``."""
        from cloudsvc.vaultstore.integrity import rebuild_index

        with self._collecting(), self.lock:
            self._seal()
            return rebuild_index(self)

    # --- space -------------------------------------------------------------------------
    def gc(self, checkpoint: Callable[[], None] = lambda: None) -> GcStats:
        """Collect garbage (see ``collector``). Runs without the store's lock: uploads,
        ``missing`` and commits proceed meanwhile. One collection at a time per store.
        ``checkpoint`` runs between its steps (``collector.collect``)."""
        from cloudsvc.vaultstore.collector import collect

        with self._collecting():
            return collect(self, checkpoint)

    @contextmanager
    def _collecting(self) -> Iterator[None]:
        """One collection (or index rebuild) of this store at a time: in this process (the
        thread lock) and in every cloud service process sharing the index
        (``IndexDb.collector_lock``: a lock file, or a PostgreSQL advisory lock; either goes
        with a process that dies). ``collector`` assumes it is alone."""
        with self._gc_lock, self.db.collector_lock():
            yield

    def storage_bytes(self) -> int:
        """Bytes of pack objects the index knows about (live, being written or deleted)."""
        return self.db.total_pack_bytes()

    def destroy(self) -> None:
        """Delete everything this store owns: its objects in the storage account and its
        index DB files (the vault is being deleted with --force). Closes the store; buffered
        blobs are dropped. Safe to run again after a crash half-way: see :func:`destroy_store`."""
        with self.lock:
            self._pack, self._pack_frames = PackBuilder(), {}
        self.close()
        destroy_store(self.backend, self.index)


def destroy_store(backend: Backend, index: IndexLocation) -> None:
    """Delete a store's index DB files, then every object under ``OWNED_PREFIXES``.

    Idempotent, and needs no open store: the storage account's own listing says what is
    left, so a teardown interrupted at any point is finished by running it again. The index
    goes first: a half-deleted store is then an index-less heap of packs that nothing reads
    (a rebuild would restore chunk rows, never points), not an index whose points name
    deleted packs. Close every VaultStore on this index first."""
    destroy_index(index)
    for prefix in OWNED_PREFIXES:
        for name in list(backend.list(prefix)):
            backend.delete(name)
        inner: object = backend
        while hasattr(inner, "inner"):  # through wrappers (error contract, fault injection)
            inner = inner.inner
        remove_tree = getattr(inner, "remove_tree", None)
        if remove_tree is not None:  # a local directory: temp files of interrupted puts, empty dirs
            remove_tree(prefix)


def _point_id(vm_id: str, created_at: float, kind: str, disks: list[DiskInfo]) -> str:
    """Stable and content-derived: the same commit retried yields the same id."""
    h = blake3.blake3(f"{vm_id}\0{created_at!r}\0{kind}".encode())
    for d in disks:
        h.update(d.virtual_size.to_bytes(8, "little") + d.fanout.to_bytes(4, "little") + d.root)
    stamp = datetime.fromtimestamp(created_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"rp-{stamp}-{h.hexdigest()[:12]}"
