"""One replication cycle of one VM: snapshot, find changed blocks, ship what the vault lacks,
commit the point, and only after the acknowledgement forget the dirty set.

Modes, per disk:

* ``initial``: the VM has no point yet. Every block is read; zero blocks are skipped (absent
  blocks of a first point are zero). Interrupted, the next cycle reads again but sends only
  what ``Missing`` reports, so the copy resumes where it stopped.
* ``incremental``: the cloud's latest point is the one this agent last had acknowledged and
  the disk's tracking is trusted: only the captured dirty blocks are read.
* ``resync``: tracking was lost (crash, new log), the disk was resized, or the cloud's latest
  point is not the one this agent remembers: every block is read and hashed and compared
  with the latest point's block map (``GetBlockMap``); only blocks that differ are changes.

Ordering: chunks (``PutChunks`` returns after they are durable) → ``CommitPoint`` (returns
after the point is durable) → ``Snapshot.commit`` (the dirty set is dropped). Any failure
before the acknowledgement aborts the snapshot, which merges the captured dirty set back.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import grpc

from agent.hypervisor import LocalHypervisor, Snapshot
from asrchannel.status import from_rpc_error
from asrerrors import AsrError
from asrpb import replication_pb2, replication_pb2_grpc
from chunkfmt import BLOCK_SIZE, ID_SIZE, ZERO_ID, chunk_id, encode_chunk, is_zero_block

log = logging.getLogger(__name__)

WINDOW_BLOCKS = 256                    # blocks read, hashed and asked about together (16 MiB)
MESSAGE_BYTES = 2 * 1024 * 1024        # frames per PutChunks message
# frames per PutChunks call (the vault flushes after each); tests shrink it to make resumption visible
SEGMENT_BYTES = int(os.environ.get("ASR_REPL_SEGMENT_BYTES", 64 * 1024 * 1024))
COMMIT_BATCH = 16384                   # changed blocks per CommitPoint message
PROGRESS_EVERY_S = 2.0


@dataclass
class Keys:
    id_key: bytes
    aead_key: bytes | None


@dataclass
class CycleResult:
    vm_id: str
    point_id: str
    created_at: float
    kind: str
    modes: list[str]
    blocks_read: int = 0
    blocks_changed: int = 0
    chunks_sent: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    stall_seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)


class _Rpc:
    def __init__(self, channel: grpc.Channel, target: str) -> None:
        self.stub = replication_pb2_grpc.ReplicationStub(channel)
        self.target = target

    def __call__(self, method: str, request: Any, timeout: float = 300.0) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"the cloud service at {self.target}") from exc


class Cycle:
    """Runs one cycle. ``pool`` hashes and encodes blocks (zstd, BLAKE3 and AES-GCM release
    the GIL, so two workers use two cores)."""

    def __init__(self, rpc: _Rpc, hv: LocalHypervisor, pool: ThreadPoolExecutor, keys: Keys,
                 progress: Callable[[float], None] | None = None) -> None:
        self.rpc = rpc
        self.hv = hv
        self.pool = pool
        self.keys = keys
        self.progress = progress or (lambda p: None)

    def run(self, vm_id: str, vm_name: str, app_consistent: bool, trusted_point: str) -> CycleResult:
        t0 = time.monotonic()
        begin = self.rpc("BeginCycle", replication_pb2.BeginCycleRequest(vm_id=vm_id))
        snap = self.hv.snapshot(vm_name, app_consistent)
        try:
            result = self._ship(vm_id, snap, begin, trusted_point)
        except BaseException:
            try:
                snap.abort()
            except AsrError:
                log.exception("aborting the snapshot of %s failed", vm_name)
            raise
        snap.commit()  # the point is acknowledged: forget the captured dirty set
        result.seconds = time.monotonic() - t0
        return result

    # -- the data path -----------------------------------------------------------------------------
    def _ship(self, vm_id: str, snap: Snapshot, begin: Any, trusted_point: str) -> CycleResult:
        session = begin.session_id
        base_sizes = {d.disk_index: d.virtual_size for d in begin.base_disks}
        base = begin.base_point_id
        kind = "app" if snap.app_consistent else "crash"
        res = CycleResult(vm_id, "", snap.created, kind, [], stall_seconds=snap.stall_seconds)
        plans: list[tuple[int, str, list[int] | None]] = []
        total = 0
        for disk in range(snap.disk_count):
            size = snap.disk_size(disk)
            nblocks = -(-size // BLOCK_SIZE)
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
        changes: dict[int, dict[int, bytes]] = {d: {} for d in range(snap.disk_count)}
        scanned = [0]
        last_report = [time.monotonic()]

        def windows() -> Iterator[list[tuple[int, int, bytes, bytes]]]:
            for disk, mode, blocks in plans:
                nblocks = -(-snap.disk_size(disk) // BLOCK_SIZE)
                base_ids = self._base_map(vm_id, base, disk) if mode == "resync" else None
                todo: Any = range(nblocks) if blocks is None else blocks
                window: list[tuple[int, int, bytes]] = []
                for b in todo:
                    window.append((disk, b, snap.read_block(disk, b)))
                    if len(window) >= WINDOW_BLOCKS:
                        yield self._select(window, mode, base_ids, changes)
                        window = []
                if window:
                    yield self._select(window, mode, base_ids, changes)

        def batches() -> Iterator[replication_pb2.ChunkBatch]:
            msg = replication_pb2.ChunkBatch(session_id=session)
            size = 0
            for chosen in windows():
                scanned[0] += len(chosen)
                res.blocks_read += len(chosen)
                if not base and time.monotonic() - last_report[0] >= PROGRESS_EVERY_S:
                    last_report[0] = time.monotonic()
                    self.progress(min(0.99, res.blocks_read / max(1, total)))
                wanted = {cid: data for _, _, cid, data in chosen if cid != ZERO_ID}
                if not wanted:
                    continue
                reply = self.rpc("Missing", replication_pb2.MissingRequest(session_id=session,
                                                                           ids=b"".join(wanted)))
                lacking = [reply.ids[i:i + ID_SIZE] for i in range(0, len(reply.ids), ID_SIZE)]
                aead = self.keys.aead_key
                frames = self.pool.map(encode_chunk, [wanted[c] for c in lacking], [aead] * len(lacking))
                for cid, frame in zip(lacking, frames, strict=True):
                    msg.ids.append(cid)
                    msg.frames.append(frame)
                    size += len(frame)
                    res.chunks_sent += 1
                    res.bytes_sent += len(frame)
                    if size >= MESSAGE_BYTES:
                        yield msg
                        msg = replication_pb2.ChunkBatch(session_id=session)
                        size = 0
            if msg.ids:
                yield msg

        self._put_all(batches())
        res.blocks_changed = sum(len(c) for c in changes.values())
        ack = self.rpc("CommitPoint", self._commit_parts(session, vm_id, base, kind, snap, changes,
                                                         res.bytes_sent))
        res.point_id = ack.point_id
        return res

    def _select(self, window: list[tuple[int, int, bytes]], mode: str, base_ids: Iterator[bytes] | None,
                changes: dict[int, dict[int, bytes]]) -> list[tuple[int, int, bytes, bytes]]:
        """Hash a window; record and return the blocks that are changes of the new point."""
        key = self.keys.id_key
        ids = list(self.pool.map(lambda w: ZERO_ID if is_zero_block(w[2]) else chunk_id(key, w[2]), window))
        out = []
        for (disk, b, data), cid in zip(window, ids, strict=True):
            if mode == "initial" and cid == ZERO_ID:
                continue
            if mode == "resync":
                assert base_ids is not None
                if next(base_ids, ZERO_ID) == cid:
                    continue
            changes[disk][b] = cid
            out.append((disk, b, cid, data))
        return out

    def _base_map(self, vm_id: str, base: str, disk: int) -> Iterator[bytes]:
        """The base point's ids of ``disk`` in block order (ZERO_ID past its end)."""
        req = replication_pb2.BlockMapRequest(vm_id=vm_id, point_id=base, disk_index=disk)
        try:
            for part in self.rpc.stub.GetBlockMap(req, timeout=3600):
                raw = part.ids
                for i in range(0, len(raw), ID_SIZE):
                    yield raw[i:i + ID_SIZE]
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"the cloud service at {self.rpc.target}") from exc

    def _put_all(self, batches: Iterator[replication_pb2.ChunkBatch]) -> None:
        """Stream batches in calls of at most SEGMENT_BYTES: the vault makes each call's
        chunks durable before answering, so an interruption loses at most one segment."""
        failure: list[BaseException] = []

        def guarded(first: replication_pb2.ChunkBatch) -> Iterator[replication_pb2.ChunkBatch]:
            sent = 0
            try:
                for msg in chain([first], batches):
                    yield msg
                    sent += sum(len(f) for f in msg.frames)
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
                      changes: dict[int, dict[int, bytes]], uploaded: int) -> Iterator[replication_pb2.CommitPart]:
        yield replication_pb2.CommitPart(
            session_id=session, vm_id=vm_id, base_point_id=base, kind=kind, created_at=snap.created,
            disks=[replication_pb2.PointDisk(disk_index=d, virtual_size=snap.disk_size(d))
                   for d in range(snap.disk_count)])
        for disk, ch in changes.items():
            items = sorted(ch.items())
            for i in range(0, len(items), COMMIT_BATCH):
                part = items[i:i + COMMIT_BATCH]
                yield replication_pb2.CommitPart(
                    disk_index=disk, blocks=struct.pack(f"<{len(part)}Q", *(b for b, _ in part)),
                    ids=b"".join(c for _, c in part))
        yield replication_pb2.CommitPart(last=True, uploaded_bytes=uploaded)

