"""One replication cycle of one VM: snapshot, find changed blocks, ship what the vault lacks,
commit the point, and only after the acknowledgement forget the dirty set.

Modes, per disk:

* ``initial``: the VM has no point yet. Every block is read; zero blocks are skipped (absent
  blocks of a first point are zero). Interrupted, the next cycle reads again but sends only
  what ``Missing`` reports, so the copy resumes where it stopped.
* ``incremental``: the cloud's latest point is the one this agent last had acknowledged and
  the disk's tracking is trusted: only the captured dirty blocks are read.
* ``resync``: tracking was lost (crash, new log), the disk was resized, or the cloud's latest
  point is not the one this agent remembers: every block is read and compared with the
  latest point: by fingerprint when this agent's fingerprint file describes that point (see
  ``fingerprints``), otherwise by chunk id against the point's block map (``GetBlockMap``);
  only blocks that differ are changes.

Ordering: chunks (``PutChunks`` returns after they are durable) → ``CommitPoint`` (returns
after the point is durable) → ``Snapshot.commit`` (the dirty set is dropped) → fingerprint
files describe the new point. Any failure before the acknowledgement aborts the snapshot,
which merges the captured dirty set back, and leaves the fingerprint files as they were.

The session carries the epoch this host holds for the VM and, for a planned failover's last
cycle, ``final`` (``BeginCycleRequest``); the vault refuses a stale host with Fenced, which
the engine turns into a fence (``agent.fencing``). An app-consistent snapshot whose quiesce
hook fails becomes a crash-consistent one in the same cycle: the result is a crash point
with ``warning``/``warning_code`` (QuiesceFailed, ASR-0045) for the engine to report.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import grpc

from agent.hypervisor import LocalHypervisor, Snapshot
from agent.replication.chunkbatch import PUT_CHUNKS, ChunkBatch
from agent.replication.fingerprints import FP_SIZE, DiskFingerprints, PendingFingerprints, fingerprint
from agent.replication.throttle import Throttle
from asrchannel.endpoints import EndpointOrder
from asrchannel.status import from_rpc_error
from asrerrors import AsrError, QuiesceFailed
from asrops.environment import integer, test_hook
from asrpb import replication_pb2, replication_pb2_grpc
from chunkfmt import (
    BLOCK_SIZE,
    COMPRESSION,
    DEFAULT_COMPRESSION,
    ID_SIZE,
    ZERO_ID,
    BlockMap,
    chunk_id,
    encode_chunk,
    encode_group,
    is_zero_block,
)
from chunkfmt.keys import Keys

log = logging.getLogger(__name__)

# Blocks hashed, asked about (one Missing call) and encoded together. A full scan uses 16 MiB
# windows: every window costs a round trip and the cloud's per-call work (authorisation,
# index lookups, session protection); 4 MiB windows made the cloud spend 16% more CPU per GiB
# and the initial copy ~15% slower (docs/benchmarks.md). A dirty list uses 4 MiB windows: an
# incremental cycle has few blocks, and more windows keep both workers busy.
WINDOW_BLOCKS = 256
DIRTY_WINDOW_BLOCKS = 64
# blocks read under one hold of the VM lock (4 MiB): guest writes wait at most for this read
READ_BLOCKS = 64
# the read buffer of an incremental window; a full scan's (16 MiB) are let go after it
SMALL_BUFFER = DIRTY_WINDOW_BLOCKS * BLOCK_SIZE
MESSAGE_BYTES = 2 * 1024 * 1024        # frames per PutChunks message
# frames per PutChunks call (the vault flushes after each); tests shrink it to make resumption visible
SEGMENT_BYTES = integer("ASR_REPL_SEGMENT_BYTES")
COMMIT_BATCH = 16384                   # changed blocks per CommitPoint message
SENT_MEMORY = 8192                     # ids remembered as sent this cycle (repeats are skipped)
PROGRESS_EVERY_S = 2.0


def codec_workers(cpus: int | None) -> int:
    """Threads that read, hash and encode windows: two per core, at most six. A thread
    waits for its window's ``Missing`` round trip before it encodes; with one thread per core
    a core idles during each round trip (bench/real_data.py: first copy ~10% faster with
    four threads on two cores). Each thread's window in flight costs a 16 MiB buffer."""
    return min(6, 2 * max(1, cpus or 1))


def _parse_test_pause(value: str) -> tuple[int, Path] | None:
    count, sep, directory = value.partition(":")
    return (int(count), Path(directory)) if sep else None


# A test hook (honoured only with ASR_TEST_MODE=1): "K:DIR" makes a cycle stop inside its
# PutChunks stream, after K messages, write DIR/paused and wait there until DIR/go exists, so a
# test can kill the agent or the cloud at a moment that is provably inside an upload
# (tests/replication/test_kill9.py).
_TEST_PAUSE = _parse_test_pause(test_hook("ASR_TEST_UPLOAD_PAUSE"))


def _test_pause(directory: Path, sent: int) -> None:
    (directory / "paused").write_text(f"{os.getpid()} {sent}\n")
    while not (directory / "go").exists():
        time.sleep(0.01)


@dataclass
class _Job:
    disk: int
    mode: str
    blocks: Sequence[int]        # ascending
    base_ids: bytes              # resync by block map: the base point's ids of these blocks
    base_fps: bytes = b""        # resync by fingerprint: the base point's fingerprints


@dataclass
class _Done:
    disk: int
    blocks: Sequence[int]
    changed: list[tuple[int, bytes]]
    frames: list[tuple[bytes, bytes]]
    fps: bytes                   # fingerprints of every block read, in order
    # the policy's ``balanced`` or ``strong`` compression: (member ids, group frame) of several new blocks
    groups: list[tuple[tuple[bytes, ...], bytes]] = field(default_factory=list)


class _BaseMap:
    """Takes a base point's ids in block order from the stream of raw parts; ZERO_ID past
    its end (the disk grew)."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self.parts = parts
        self.buf = b""

    def take(self, n: int) -> bytes:
        want = n * ID_SIZE
        chunks = [self.buf]
        have = len(self.buf)
        while have < want:
            part = next(self.parts, None)
            if part is None:
                chunks.append(bytes(want - have))
                break
            chunks.append(part)
            have += len(part)
        joined = b"".join(chunks)
        self.buf = joined[want:]
        return joined[:want]


@dataclass
class CycleResult:
    vm_id: str
    point_id: str
    created_at: float
    kind: str
    modes: list[str]
    resync_by: list[str] = field(default_factory=list)  # per disk: fingerprints, block-map or ""
    blocks_read: int = 0         # blocks read from the snapshot (every block of a full scan)
    blocks_changed: int = 0      # blocks the point takes (changed against its base)
    chunks_sent: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    stall_seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    warning: str = ""            # e.g. the quiesce hook failed: the point is crash-consistent
    warning_code: str = ""       # its asrerrors code (ASR-0045)


class Windows:
    """The host's bound on windows in flight, shared by the cycles of all its VMs, and the
    read buffers they reuse. Without it every concurrent cycle kept ``workers + 2`` windows
    and their buffers in flight: 25 VMs' first copies at once took an agent to ~600 MiB
    (bench/load.py). With it a cycle has one window of its own plus what it takes of the
    host's ``workers + 2`` slots (16 MiB each), and the read buffers are at most one per
    codec thread.

    A full scan's buffers (16 MiB) are kept only while some cycle of the host scans: once the
    last first copy or resync ends, they are let go and incremental windows use 4 MiB ones.
    Before, the first copies' buffers stayed for the life of the process: 64 MiB of an
    agent's ~170 MiB in the load bench, for cycles that need a sixteenth of it."""

    def __init__(self, workers: int) -> None:
        self.depth = workers + 2
        self.slots = threading.BoundedSemaphore(self.depth)
        self.buffers: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._scans = 0               # cycles of the host reading whole disks now
        self._lock = threading.Lock()

    def begin_scan(self) -> None:
        with self._lock:
            self._scans += 1

    def end_scan(self) -> None:
        """A whole-disk cycle ended: when it was the last, let go of the buffers larger
        than an incremental window (one in use now is let go when it comes back)."""
        with self._lock:
            self._scans -= 1
            if self._scans:
                return
            kept = []
            while True:
                try:
                    buf = self.buffers.get_nowait()
                except queue.Empty:
                    break
                if len(buf) <= SMALL_BUFFER:
                    kept.append(buf)
            for buf in kept:
                self.buffers.put(buf)

    def give_back(self, buf: bytearray) -> None:
        """A window's buffer, for the next window; not kept when only a scan needs its size.
        (``_scans`` is read without the lock: a scan starting or ending meanwhile costs at
        most one buffer kept until the next window, or allocated again.)"""
        if len(buf) <= SMALL_BUFFER or self._scans:
            self.buffers.put(buf)


class _Rpc:
    def __init__(self, channel: grpc.Channel, target: str, bulk_channel: grpc.Channel | None = None,
                 peer: str = "", metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.stub = replication_pb2_grpc.ReplicationStub(channel)
        # sent with every call (a recovery host's pairing id, agent.replica.channel)
        self.metadata = metadata or None
        # PutChunks streams go over their own connection when one is given (asrchannel.tls),
        # their messages built as wire bytes (agent.replication.chunkbatch)
        self.put_chunks = (bulk_channel or channel).stream_unary(
            PUT_CHUNKS, request_serializer=ChunkBatch.encode,
            response_deserializer=replication_pb2.PutChunksReply.FromString)
        self.target = target
        # the cloud's endpoints when the channel follows several (asrchannel.endpoints)
        self.order: EndpointOrder | None = getattr(channel, "order", None)
        # who answers, for errors: the vault, or a recovery host (site-to-site, agent.replica)
        self._peer = peer

    @property
    def peer(self) -> str:
        return self._peer or f"the cloud service at {self.endpoint}"

    @property
    def endpoint(self) -> str:
        """Where calls go now."""
        return self.order.current if self.order is not None else self.target

    @property
    def endpoints(self) -> int:
        return len(self.order.endpoints) if self.order is not None else 1

    def __call__(self, method: str, request: Any, timeout: float = 300.0) -> Any:
        fn = self.put_chunks if method == "PutChunks" else getattr(self.stub, method)
        peer = self.peer
        try:
            return fn(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, peer) from exc


class Cycle:
    """Runs one cycle. ``pool`` hashes and encodes blocks (zstd, BLAKE3 and AES-GCM release
    the GIL, so two workers use two cores)."""

    def __init__(self, rpc: _Rpc, hv: LocalHypervisor, pool: ThreadPoolExecutor, keys: Keys,
                 progress: Callable[[float], None] | None = None,
                 fingerprint_dir: Path | None = None, epoch: int = 1, final: bool = False,
                 throttle: Throttle | None = None, windows: Windows | None = None,
                 compression: str = DEFAULT_COMPRESSION) -> None:
        self.rpc = rpc
        self.hv = hv
        self.pool = pool
        # windows in flight and their read buffers: the host's (shared by every VM's cycle)
        self.windows = windows or Windows(getattr(pool, "_max_workers", 2))
        self.keys = keys
        self.progress = progress or (lambda p: None)
        self.fingerprint_dir = fingerprint_dir
        self.epoch = epoch    # the epoch this host holds for the VM (BeginCycleRequest.epoch)
        self.final = final    # a planned failover's last cycle: its commit fences this host
        self.throttle = throttle  # the host's upload limit, shared with the other VMs' cycles
        # the policy's compression: zstd levels, and blocks per frame (more than one: groups)
        if compression not in COMPRESSION:
            log.warning("unknown compression %r in the policy: using %s", compression, DEFAULT_COMPRESSION)
        self.compression = COMPRESSION.get(compression, COMPRESSION[DEFAULT_COMPRESSION]).for_vm(keys.encrypted)
        # set when an app-consistent snapshot's quiesce hook failed (the point is crash-consistent)
        self.quiesce_error: QuiesceFailed | None = None
        self._fp_files: list[DiskFingerprints] = []
        self._fp_pending: list[PendingFingerprints] = []
        self._messages = 0    # PutChunks messages sent (for the test pause, see _test_pause)

    def _snapshot(self, vm_name: str, app_consistent: bool) -> Snapshot:
        """An app-consistent snapshot when asked for, else (or when the quiesce hook fails,
        times out or cannot be run) a crash-consistent one, in the same cycle."""
        if not app_consistent:
            return self.hv.snapshot(vm_name, False)
        try:
            return self.hv.snapshot(vm_name, True)
        except QuiesceFailed as err:
            self.quiesce_error = err
            log.warning("app-consistent snapshot fell back to crash-consistent", extra={"fields": {
                "vm": vm_name, "code": err.code, "error": err.message}})
            return self.hv.snapshot(vm_name, False)

    def run(self, vm_id: str, vm_name: str, app_consistent: bool, trusted_point: str) -> CycleResult:
        t0 = time.monotonic()
        begin = self.rpc("BeginCycle", replication_pb2.BeginCycleRequest(vm_id=vm_id, epoch=self.epoch,
                                                                         final=self.final))
        t1 = time.monotonic()
        snap = self._snapshot(vm_name, app_consistent)
        t2 = time.monotonic()
        try:
            result = self._ship(vm_id, snap, begin, trusted_point)
        except BaseException:
            for pending in self._fp_pending:
                pending.discard()
            try:
                snap.abort()
            except AsrError:
                log.exception("aborting the snapshot of %s failed", vm_name)
            raise
        finally:
            for f in self._fp_files:
                f.close()
        t3 = time.monotonic()
        if self.quiesce_error is not None:
            result.warning = f"{self.quiesce_error.message}; the point is crash-consistent"
            result.warning_code = self.quiesce_error.code
        snap.commit()  # the point is acknowledged: forget the captured dirty set
        for pending in self._fp_pending:
            pending.commit(result.point_id, begin.base_point_id)
        result.seconds = time.monotonic() - t0
        result.phases = {"begin": t1 - t0, "snapshot": t2 - t1, **result.phases,
                         "release": result.seconds - (t3 - t0)}
        return result

    # -- the data path -----------------------------------------------------------------------------
    def _ship(self, vm_id: str, snap: Snapshot, begin: Any, trusted_point: str) -> CycleResult:
        session = begin.session_id
        base_sizes = {d.disk_index: d.virtual_size for d in begin.base_disks}
        base = begin.base_point_id
        kind = "app" if snap.app_consistent else "crash"
        res = CycleResult(vm_id, "", snap.created, kind, [], stall_seconds=snap.stall_seconds)
        plans: list[tuple[int, str, list[int] | None]] = []
        block_counts: list[int] = []
        total = 0
        for disk in range(snap.disk_count):
            size = snap.disk_size(disk)
            nblocks = -(-size // BLOCK_SIZE)
            block_counts.append(nblocks)
            dirty = snap.dirty_blocks(disk)
            if not base:
                plans.append((disk, "initial", None))
                total += nblocks
            elif base != trusted_point or dirty is None or base_sizes.get(disk) != size:
                plans.append((disk, "resync", None))
                total += nblocks
            else:
                plans.append((disk, "incremental", [b for b in dirty if b < nblocks]))
                total += len(plans[-1][2] or [])
        res.modes = [m for _, m, _ in plans]
        by_fp: set[int] = set()  # resync disks compared by fingerprint, not by block map
        if self.fingerprint_dir is not None:
            self._fp_files = [DiskFingerprints(self.fingerprint_dir, d) for d in range(snap.disk_count)]
            for disk, mode, blocks in plans:
                if mode == "resync" and self._fp_files[disk].open_for(base, block_counts[disk]):
                    by_fp.add(disk)
                self._fp_pending.append(self._fp_files[disk].pending(block_counts[disk], whole=blocks is None))
        res.resync_by = ["fingerprints" if d in by_fp else "block-map" if m == "resync" else ""
                         for d, m, _ in plans]
        changes = {d: BlockMap() for d in range(snap.disk_count)}
        last_report = [time.monotonic()]
        slots = self.windows.slots
        # windows in flight, each with whether it holds one of the host's slots
        pending: deque[tuple[Future[_Done], bool]] = deque()
        depth = self.windows.depth   # this cycle's windows in flight at most (the host's bound too)

        def take() -> _Done:
            fut, held = pending.popleft()
            try:
                return fut.result()
            finally:
                if held:
                    slots.release()

        def jobs() -> Iterator[_Job]:
            for disk, mode, blocks in plans:
                nblocks = block_counts[disk]
                if blocks is None:
                    fps = self._fp_files[disk] if disk in by_fp else None
                    base_ids = (_BaseMap(self._base_map(vm_id, base, disk))
                                if mode == "resync" and fps is None else None)
                    for first in range(0, nblocks, WINDOW_BLOCKS):
                        window = range(first, min(first + WINDOW_BLOCKS, nblocks))
                        yield _Job(disk, mode, window, base_ids.take(len(window)) if base_ids else b"",
                                   fps.read(first, len(window)) if fps else b"")
                else:
                    for i in range(0, len(blocks), DIRTY_WINDOW_BLOCKS):
                        yield _Job(disk, mode, blocks[i:i + DIRTY_WINDOW_BLOCKS], b"")

        def results() -> Iterator[_Done]:
            """Windows are read, hashed, asked about and encoded on the pool, several at once;
            their results come back in order (so changes stay sorted by block)."""
            for job in jobs():
                # A cycle always has one window of its own (so every VM's cycle progresses,
                # a throttled first copy cannot starve the others); more only while the
                # host has slots free. Never wait for a slot: a cycle that waited while
                # holding slots could wait for another doing the same. Take our own oldest
                # result instead, which frees its slot.
                held = False
                while pending:
                    if len(pending) < depth and slots.acquire(blocking=False):
                        held = True
                        break
                    yield take()
                try:
                    pending.append((self.pool.submit(self._process, snap, job, session), held))
                except BaseException:
                    if held:
                        slots.release()
                    raise
            while pending:
                yield take()

        sent: OrderedDict[bytes, None] = OrderedDict()  # recently sent ids (bounded)

        def batches() -> Iterator[tuple[ChunkBatch, int]]:
            msg = ChunkBatch(session)
            size = 0
            scanned = 0
            for done in results():
                scanned += len(done.blocks)
                res.blocks_read += len(done.blocks)  # read from the snapshot (and fingerprinted)
                changes[done.disk].extend(done.changed)
                if self._fp_pending:
                    self._fp_pending[done.disk].add(done.blocks, done.fps)
                if not base and time.monotonic() - last_report[0] >= PROGRESS_EVERY_S:
                    last_report[0] = time.monotonic()
                    self.progress(min(0.99, scanned / max(1, total)))
                for cid, frame in done.frames:
                    if cid in sent:  # a repeat of a block another window already shipped
                        continue
                    sent[cid] = None
                    if len(sent) > SENT_MEMORY:
                        sent.popitem(last=False)
                    msg.add(cid, frame)
                    size += len(frame)
                    res.chunks_sent += 1
                    res.bytes_sent += len(frame)
                    if size >= MESSAGE_BYTES:
                        yield msg, size
                        msg = ChunkBatch(session)
                        size = 0
                for ids, frame in done.groups:
                    if all(cid in sent for cid in ids):
                        continue  # (a member sent before travels again: the vault keeps one)
                    for cid in ids:
                        sent[cid] = None
                    while len(sent) > SENT_MEMORY:
                        sent.popitem(last=False)
                    msg.add_group(frame)
                    size += len(frame)
                    res.chunks_sent += len(ids)
                    res.bytes_sent += len(frame)
                    if size >= MESSAGE_BYTES:
                        yield msg, size
                        msg = ChunkBatch(session)
                        size = 0
            if msg:
                yield msg, size

        t0 = time.monotonic()
        scan = any(blocks is None for _, _, blocks in plans)   # whole disks: 16 MiB windows
        if scan:
            self.windows.begin_scan()
        try:
            self._put_all(batches())
        finally:
            for fut, _ in pending:
                fut.cancel()
            wait([fut for fut, _ in pending])
            if scan:
                self.windows.end_scan()
            for _, held in pending:
                if held:
                    slots.release()
            pending.clear()
        t1 = time.monotonic()
        res.blocks_changed = sum(len(c) for c in changes.values())
        ack = self.rpc("CommitPoint", self._commit_parts(session, vm_id, base, kind, snap, changes,
                                                         res.bytes_sent, res.modes.count("resync")))
        res.point_id = ack.point_id
        res.phases = {"transfer": t1 - t0, "commit": time.monotonic() - t1}
        return res

    def _process(self, snap: Snapshot, job: _Job, session: str) -> _Done:
        """One window on a pool thread: one batched snapshot read into a reused buffer, then
        fingerprints, zero check and keyed hash per block, the changes of the new point,
        ``Missing`` for them, and the frames of the ids the vault lacks. A resync by
        fingerprint hashes only the blocks whose fingerprint differs from the base point's."""
        try:
            buf = self.windows.buffers.get_nowait()
        except queue.Empty:
            buf = bytearray()
        if len(buf) < len(job.blocks) * BLOCK_SIZE:
            buf = bytearray(len(job.blocks) * BLOCK_SIZE)  # sized for the windows of this cycle
        try:
            filled = 0
            for k in range(0, len(job.blocks), READ_BLOCKS):
                part = snap.read_block_list(job.disk, job.blocks[k:k + READ_BLOCKS], memoryview(buf)[filled:])
                filled += len(part)
            view = memoryview(buf)[:filled]
            fps = b"".join([fingerprint(view[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE])
                            for i in range(len(job.blocks))]) if self._fp_pending else b""
            if job.base_fps and fps == job.base_fps:
                return _Done(job.disk, job.blocks, [], [], fps)  # the whole window is unchanged
            key = self.keys.id_key
            changed: list[tuple[int, bytes]] = []
            wanted: dict[bytes, int] = {}
            for i, b in enumerate(job.blocks):
                if job.base_fps and fps[i * FP_SIZE:(i + 1) * FP_SIZE] == job.base_fps[i * FP_SIZE:(i + 1) * FP_SIZE]:
                    continue
                data = view[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]
                cid = ZERO_ID if is_zero_block(data) else chunk_id(key, data)
                if job.mode == "initial" and cid == ZERO_ID:
                    continue
                if job.mode == "resync" and job.base_ids[i * ID_SIZE:(i + 1) * ID_SIZE] == cid:
                    continue
                changed.append((b, cid))
                if cid != ZERO_ID:
                    wanted.setdefault(cid, i)
            frames: list[tuple[bytes, bytes]] = []
            groups: list[tuple[tuple[bytes, ...], bytes]] = []
            if wanted:
                reply = self.rpc("Missing", replication_pb2.MissingRequest(session_id=session,
                                                                           ids=b"".join(wanted)))
                aead, comp = self.keys.aead_key, self.compression
                lacking = [reply.ids[k:k + ID_SIZE] for k in range(0, len(reply.ids), ID_SIZE)]
                # in block order: neighbours on disk are often parts of one file, which is
                # what a group frame compresses better than its blocks alone
                for k in range(0, len(lacking), comp.per_frame):
                    members = [(cid, view[wanted[cid] * BLOCK_SIZE:(wanted[cid] + 1) * BLOCK_SIZE])
                               for cid in lacking[k:k + comp.per_frame]]
                    if len(members) == 1:
                        frames.append((members[0][0], encode_chunk(members[0][1], aead, comp.lone_level)))
                    else:
                        groups.append((tuple(c for c, _ in members), encode_group(members, aead, comp.level)))
            return _Done(job.disk, job.blocks, changed, frames, fps, groups)
        finally:
            self.windows.give_back(buf)

    def _base_map(self, vm_id: str, base: str, disk: int) -> Iterator[bytes]:
        """The base point's ids of ``disk`` in block order, as the raw parts of the stream."""
        req = replication_pb2.BlockMapRequest(vm_id=vm_id, point_id=base, disk_index=disk)
        try:
            for part in self.rpc.stub.GetBlockMap(req, timeout=3600, metadata=self.rpc.metadata):
                yield part.ids
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.rpc.peer) from exc

    def _put_all(self, batches: Iterator[tuple[ChunkBatch, int]]) -> None:
        """Stream batches in calls of at most SEGMENT_BYTES: the vault makes each call's
        chunks durable before answering, so an interruption loses at most one segment."""
        failure: list[BaseException] = []

        def guarded(first: tuple[ChunkBatch, int]) -> Iterator[ChunkBatch]:
            sent = 0
            try:
                # the frames' bytes travel beside each message (for the throttle and the pause)
                for msg, size in chain([first], batches):
                    if _TEST_PAUSE is not None and self._messages == _TEST_PAUSE[0]:
                        _test_pause(_TEST_PAUSE[1], self._messages)
                    self._messages += 1
                    if self.throttle is not None:
                        self.throttle.take(size)
                    yield msg
                    sent += size
                    if sent >= SEGMENT_BYTES:
                        return
            except BaseException as exc:  # surfaced below: grpc would only say CANCELLED
                failure.append(exc)
                raise

        while True:
            try:
                first = next(batches)
            except StopIteration:
                return
            try:
                self.rpc("PutChunks", guarded(first), timeout=3600)
            except AsrError:
                if failure:
                    raise failure[0] from None
                raise
            if failure:
                raise failure[0]

    def _commit_parts(self, session: str, vm_id: str, base: str, kind: str, snap: Snapshot,
                      changes: dict[int, BlockMap], uploaded: int,
                      resync_disks: int = 0) -> Iterator[replication_pb2.CommitPart]:
        yield replication_pb2.CommitPart(
            session_id=session, vm_id=vm_id, base_point_id=base, kind=kind, created_at=snap.created,
            disks=[replication_pb2.PointDisk(disk_index=d, virtual_size=snap.disk_size(d))
                   for d in range(snap.disk_count)])
        for disk, ch in changes.items():
            for i in range(0, len(ch), COMMIT_BATCH):
                yield replication_pb2.CommitPart(disk_index=disk, blocks=ch.block_bytes(i, i + COMMIT_BATCH),
                                                 ids=ch.id_bytes(i, i + COMMIT_BATCH))
        yield replication_pb2.CommitPart(last=True, uploaded_bytes=uploaded, resync_disks=resync_disks)
