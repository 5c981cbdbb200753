"""Re-protect, the recovery host's side: what a failover VM writes goes back to its primary
(``FailbackData.Sync``; the primary's side is ``agent.reverse``).

A sync reads a **snapshot** of the failover VM (``LocalHypervisor.snapshot``: the disks at one
instant, copy-on-write under a running guest, and the change tracking captured and restarted
clean). It sends the snapshot's dirty blocks — or, in a *full* sync (the first one, or when
tracking cannot be trusted), every block whose hash differs from the primary's — and forgets
them only when the primary says it wrote and fsynced them (``applied``): the snapshot is then
committed. A stream that ends earlier aborts the snapshot, and its captured blocks go back to
the VM's tracking, so the next sync sends them again. Nothing written on the recovery host is
ever forgotten without the primary's acknowledgement.

The failover VM's tracking has a second reader: deleting a VM that ran on the replica disks
re-arms the replica from the blocks it wrote since it was made (``failover._remove``). A sync
that forgets blocks therefore first adds them to ``REPLICA_DIR/<vm_id>/sent/disk<N>.dirty``
(:class:`SentBlocks`, created clean when the VM is made): the VM's own log and that one
together name every block it wrote.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from agent.hypervisor import LocalHypervisor, tracking
from agent.hypervisor.snapshot import Snapshot
from asrerrors import NotFound, StateConflict, UsageError
from asrpb import failover_pb2
from chunkfmt import BLOCK_SIZE
from cloudsvc.failover.failback import diff_reply

if TYPE_CHECKING:
    from agent.replica.failover import ReplicaFailovers

log = logging.getLogger(__name__)

BATCH = 32   # blocks per reply: at most 2 MiB


class SentBlocks:
    """The blocks reverse syncs took from a failover VM's change tracking (owner of ``sent/``)."""

    def __init__(self, replica_dir: str) -> None:
        self.dir = Path(replica_dir) / "sent"

    def _path(self, disk: int) -> Path:
        return self.dir / f"disk{disk}.dirty"

    def start(self, sizes: list[int]) -> None:
        """A VM made on the replica disks: nothing sent yet (trusted, clean logs)."""
        self.clear()
        self.dir.mkdir(parents=True, exist_ok=True)
        for disk, size in enumerate(sizes):
            tracking.write_log(self._path(disk), size)

    def add(self, snap: Snapshot) -> None:
        """Before the snapshot is committed: its captured blocks join the sent set (a capture
        that cannot be trusted makes the set untrusted, and the re-arm redoes the disks)."""
        for disk in range(snap.disk_count):
            size = snap.disk_size(disk)
            dirty = snap.dirty_blocks(disk)
            bits = None
            if dirty is not None:
                buf = bytearray((tracking.block_count(size) + 7) // 8)
                for b in dirty:
                    buf[b // 8] |= 1 << (b % 8)
                bits = bytes(buf)
            tracking.merge_into(bits, self._path(disk), size)

    def merged(self, written: list[list[int]] | None, sizes: list[int]) -> list[list[int]] | None:
        """The VM's own written blocks together with the sent ones; None if either is untrusted."""
        if written is None:
            return None
        out = []
        for disk, size in enumerate(sizes):
            bits = tracking.read_log(self._path(disk), size)
            if bits is None:
                return None
            out.append(sorted(set(written[disk]) | set(tracking.bits_to_list(bits))))
        return out

    def clear(self) -> None:
        if self.dir.exists():
            for p in self.dir.iterdir():
                p.unlink()
            self.dir.rmdir()


class SyncSource:
    """FailbackData.Sync for a primary that re-protects (already admitted by ``replica_api``)."""

    def __init__(self, failovers: ReplicaFailovers, hv: LocalHypervisor) -> None:
        self.failovers = failovers
        self.hv = hv
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def sync(self, vm_id: str, start: failover_pb2.SyncStart, requests: Iterator[failover_pb2.SyncRequest],
             peer: str) -> Iterator[failover_pb2.SyncReply]:
        entry = self.failovers.made(vm_id).get("failover")
        if entry is None:
            raise NotFound(f"this host runs no failover VM of {vm_id}: there is nothing to re-protect from",
                           action="Fail the VM over to this host first (planned or unplanned, then commit).")
        with self._lock:
            if vm_id in self._busy:
                raise StateConflict(f"a sync of {entry.name} is already running", action="Try again later.")
            self._busy.add(vm_id)
        try:
            snap = self.hv.snapshot(entry.name)
            sent = SentBlocks(self.failovers.host.vm(vm_id).dir) if entry.in_place else None
            yield from self._serve(snap, start, requests, sent, entry.name, peer)
        finally:
            with self._lock:
                self._busy.discard(vm_id)

    def _serve(self, snap: Snapshot, start: failover_pb2.SyncStart, requests: Iterator[failover_pb2.SyncRequest],
               sent: SentBlocks | None, name: str, peer: str) -> Iterator[failover_pb2.SyncReply]:
        done = False
        end = failover_pb2.SyncEnd()
        try:
            if start.full:
                for req in requests:
                    step = req.WhichOneof("step")
                    if step == "hashes_done":
                        break
                    if step != "hashes":
                        raise UsageError(f"a full sync expects block hashes, not {step}")
                    h = req.hashes
                    out = diff_reply(h, snap.disk_size(h.disk_index), _reader(snap, h.disk_index))
                    end.compared += out.compared
                    end.blocks += len(out.blocks)
                    end.bytes += sum(len(b.data) for b in out.blocks)
                    yield failover_pb2.SyncReply(blocks=out)
            else:
                dirty = [snap.dirty_blocks(d) for d in range(snap.disk_count)]
                if any(d is None for d in dirty):
                    yield failover_pb2.SyncReply(end=failover_pb2.SyncEnd(untracked=True))
                    return
                for disk, blocks in enumerate(dirty):
                    assert blocks is not None
                    for i in range(0, len(blocks), BATCH):
                        out = failover_pb2.BlockDiff(disk_index=disk, first_block=blocks[i])
                        for b in blocks[i:i + BATCH]:
                            out.blocks.append(failover_pb2.DiffBlock(index=b, data=snap.read_block(disk, b)))
                        end.blocks += len(out.blocks)
                        end.bytes += sum(len(x.data) for x in out.blocks)
                        yield failover_pb2.SyncReply(blocks=out)
            yield failover_pb2.SyncReply(end=end)
            last = next(requests, None)
            if last is None or last.WhichOneof("step") != "applied":
                return
            if sent is not None:
                sent.add(snap)        # durable before the VM's tracking forgets them
            snap.commit()
            done = True
            log.info("reverse sync served", extra={"fields": {"vm": name, "full": start.full, "blocks": end.blocks,
                                                               "bytes": end.bytes, "peer": peer}})
            yield failover_pb2.SyncReply(committed=True)
        finally:
            if not done:
                snap.abort()


def _reader(snap: Snapshot, disk: int) -> Callable[[int, int], bytes]:
    def read(offset: int, length: int) -> bytes:
        return snap.read_block(disk, offset // BLOCK_SIZE)[:length]
    return read
