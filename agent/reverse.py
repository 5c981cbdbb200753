"""Re-protect, the primary host's side (site to site): after a committed failover, keep this
host's fenced copy of the VM equal to the failover VM on the recovery host, so that failback
ships only the last delta (the recovery host's side is ``agent.replica.sync``).

The vault's ``ReverseReplicate`` command (start) fences and stops the VM here, records the
entry (``STATE_DIR/reverse/<vm_id>.json``, durable, so a killed agent carries on where it
was) and runs the first sync: a **full** one, every block compared by hash with a snapshot
of the failover VM, because this host's disks may hold writes the recovery side never saw
(an unplanned failover) — only the blocks that differ come back. From then on, every
``interval_seconds``, an **incremental** sync fetches the blocks the failover VM wrote since
the previous one. Failback (``agent.failback``, Failback.incremental) runs the last sync
with the failover VM shut down, and removes the entry.

Blocks are written the way guest writes go (``failback.DiskWriter``: marked dirty, so the
forward replication that resumes after failback ships exactly them) and fsynced before the
primary says ``applied``; the recovery host forgets them only then. The host dials the
recovery host's ``replica_listen`` (as for failback and forward cycles): the primary never
has to listen.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import grpc

from agent import fencing
from agent.failback import DiskWriter, hash_requests
from agent.hypervisor.store import VmPaths
from agent.replica.channel import ReplicaChannels
from agent.runtime import AgentRuntime
from asrchannel.status import from_rpc_error
from asrerrors import AsrError, UsageError, storage_error
from asrpb import control_pb2, failover_pb2, failover_pb2_grpc, replication_pb2, replication_pb2_grpc
from diskimage import open_disk
from durablefile import write_atomic

log = logging.getLogger("asr-agent.reverse")

SYNC_TIMEOUT_S = 6 * 3600.0
TICK_S = 1.0


@dataclass
class Entry:
    vm_id: str
    vm_name: str
    recovery_host: str
    address: str
    pairing_id: str
    interval: int
    synced: bool = False            # a full sync completed: incremental ones may follow
    last_sync_at: float = 0.0       # the last attempt (the schedule counts from it)
    synced_at: float = 0.0          # the last sync that succeeded
    last_blocks: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class SyncResult:
    full: bool
    compared: int
    blocks: int
    bytes: int


class ReverseReplication:
    def __init__(self, rt: AgentRuntime) -> None:
        self.rt = rt
        self.dir = os.path.join(rt.config.state_dir, "reverse")
        os.makedirs(self.dir, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # ---- entries --------------------------------------------------------------------------
    def _path(self, vm_id: str) -> str:
        return os.path.join(self.dir, f"{vm_id}.json")

    def get(self, vm_id: str) -> Entry | None:
        try:
            with open(self._path(vm_id)) as f:
                return Entry(**json.load(f))
        except FileNotFoundError:
            return None

    def all(self) -> list[Entry]:
        return [e for e in (self.get(n[:-5]) for n in sorted(os.listdir(self.dir)) if n.endswith(".json"))
                if e is not None]

    def _save(self, e: Entry) -> None:
        write_atomic(self._path(e.vm_id), json.dumps(asdict(e)).encode())

    def _lock(self, vm_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(vm_id, threading.Lock())

    # ---- the command --------------------------------------------------------------------------
    def command(self, rt: AgentRuntime, cmd: control_pb2.Command) -> str:
        body = cmd.reverse_replicate
        if body.action == "stop":
            return "reverse replication of " + body.vm_name + (" stopped" if self.stop(body.vm_id) else
                                                                ": was not running")
        if body.action != "start":
            raise UsageError(f"reverse replication action {body.action!r} is not start or stop")
        src = body.source
        if not src.address or not src.pairing_id:
            raise UsageError(f"re-protect of {body.vm_name}: the recovery host's address and pairing are missing",
                             action="Check that the recovery host registered with --address (asr server list).")
        name = self._name(body.vm_id, body.vm_name)
        held = rt.settings.get(body.vm_id)
        # this copy must never run while the failover VM is the active side
        fencing.fence_vm(rt.hv, name, body.vm_id, "re-protect: the recovery side is active; this copy follows it",
                         held.epoch if held is not None else 0, cmd.epoch)
        with self._lock(body.vm_id):
            e = self.get(body.vm_id)
            if e is None or (e.recovery_host, e.address, e.pairing_id) != (src.recovery_host, src.address,
                                                                           src.pairing_id):
                e = Entry(body.vm_id, name, src.recovery_host, src.address, src.pairing_id,
                          max(1, body.interval_seconds))
                self._save(e)
            r = self._sync(e, full=True)
        return (f"re-protect of {name}: full sync from {src.recovery_host} compared {r.compared} blocks, fetched "
                f"{r.blocks} differing blocks ({r.bytes} bytes); syncing every {e.interval} s")

    def stop(self, vm_id: str) -> bool:
        """End reverse replication of the VM (waits for a sync in progress)."""
        with self._lock(vm_id):
            if self.get(vm_id) is None:
                return False
            os.unlink(self._path(vm_id))
            return True

    def final(self, vm_id: str) -> SyncResult | None:
        """Failback's last sync (the failover VM is shut down), then the entry goes; None when
        this host does not re-protect the VM (failback compares every block instead)."""
        with self._lock(vm_id):
            e = self.get(vm_id)
            if e is None:
                return None
            r = self._sync(e, full=not e.synced, report=False)
            os.unlink(self._path(vm_id))
            return r

    # ---- the schedule ----------------------------------------------------------------------------
    def run(self) -> None:
        """Thread: an incremental sync of every entry that is due (its interval since the last)."""
        while not self.rt.stopping.wait(TICK_S):
            for e in self.all():
                if self.rt.clock.now() < e.last_sync_at + e.interval:
                    continue
                lock = self._lock(e.vm_id)
                if not lock.acquire(blocking=False):
                    continue
                try:
                    current = self.get(e.vm_id)     # stopped meanwhile?
                    if current is not None:
                        self._sync(current, full=not current.synced)
                except AsrError:
                    pass    # recorded in the entry and logged by _sync; the next turn tries again
                except Exception:  # noqa: BLE001 - a defect must not end every VM's re-protect
                    log.exception("reverse sync failed unexpectedly", extra={"fields": {"vm": e.vm_name}})
                finally:
                    lock.release()

    # ---- one sync (under the VM's lock) -----------------------------------------------------------------
    def _sync(self, e: Entry, full: bool, report: bool = True) -> SyncResult:
        try:
            try:
                r = self._pull(e, full)
                if r is None:         # the recovery host's tracking is lost: compare everything
                    r = self._pull(e, True)
                    assert r is not None
            except OSError as exc:
                # reading or writing this host's disks (a full disk): recorded like any other
                # failure, so the schedule carries on and the vault hears of it
                raise storage_error(exc, f"re-protect of {e.vm_name}: cannot write the synced blocks",
                                    "this host's VM storage") from exc
        except AsrError as exc:
            e.last_error, e.last_sync_at = f"{exc.code}: {exc}", self.rt.clock.now()
            self._save(e)
            log.warning("reverse sync failed", extra={"fields": {"vm": e.vm_name, "code": exc.code,
                                                                  "error": str(exc)}})
            if report:
                self._report(e)
            raise
        now = self.rt.clock.now()
        e.synced, e.last_sync_at, e.synced_at, e.last_blocks, e.last_error = True, now, now, r.blocks, ""
        self._save(e)
        if report:
            self._report(e)
        log.info("reverse sync", extra={"fields": {"vm": e.vm_name, "full": r.full, "compared": r.compared,
                                                    "blocks": r.blocks, "bytes": r.bytes,
                                                    "from": e.recovery_host}})
        return r

    def _report(self, e: Entry) -> None:
        """Tell the vault (``ReportReverse``; best effort: the entry is the record, and the next
        sync reports again). A vault that no longer knows the pairing ends the following."""
        try:
            ack = replication_pb2_grpc.ReplicationStub(self.rt.link.channel).ReportReverse(
                replication_pb2.ReverseReport(vm_id=e.vm_id, pairing_id=e.pairing_id, synced_at=e.synced_at,
                                              blocks=e.last_blocks, error=e.last_error), timeout=30)
        except grpc.RpcError as exc:
            log.warning("reverse sync not reported", extra={"fields": {"vm": e.vm_name, "error": str(exc.details())}})
            return
        if not ack.paired:
            log.info("reverse replication ended: the vault no longer has the VM re-protected",
                     extra={"fields": {"vm": e.vm_name, "pairing": e.pairing_id}})
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(e.vm_id))

    def _pull(self, e: Entry, full: bool) -> SyncResult | None:
        vm = self.rt.hv.get(self._name(e.vm_id, e.vm_name))
        paths = VmPaths(self.rt.hv.vm_dir, vm.name)
        session = f"{e.vm_id}/{e.pairing_id}"
        peer = f"the recovery host {e.recovery_host} (re-protect of {vm.name})"
        ready = threading.Event()
        ok = [False]

        def requests() -> Iterator[failover_pb2.SyncRequest]:
            yield failover_pb2.SyncRequest(start=failover_pb2.SyncStart(session_id=session, full=full))
            if full:
                for index, spec in enumerate(vm.disks):
                    reader = open_disk(spec.path, readonly=True)
                    try:
                        for h in hash_requests(session, index, reader):
                            yield failover_pb2.SyncRequest(hashes=h)
                    finally:
                        reader.close()
                yield failover_pb2.SyncRequest(hashes_done=True)
            ready.wait()
            if ok[0]:
                yield failover_pb2.SyncRequest(applied=True)

        channels = ReplicaChannels(self.rt.ident, self.rt.config.proxy)
        writer = DiskWriter(paths, vm.disks)
        end = failover_pb2.SyncEnd()
        committed = False
        try:
            stub = failover_pb2_grpc.FailbackDataStub(channels.channel(e.recovery_host, e.address, e.pairing_id))
            replies = stub.Sync(requests(), timeout=SYNC_TIMEOUT_S)
            for reply in replies:
                step = reply.WhichOneof("step")
                if step == "blocks":
                    for blk in reply.blocks.blocks:
                        writer.write(reply.blocks.disk_index, blk.index, blk.data)
                elif step == "end":
                    end = reply.end
                    if end.untracked:
                        replies.cancel()
                        break
                    writer.flush()        # durable before the recovery host may forget them
                    ok[0] = True
                    ready.set()
                elif step == "committed":
                    committed = True
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, peer) from exc
        finally:
            ready.set()
            writer.close()
            channels.close()
        if end.untracked:
            return None
        if not committed:
            raise AsrError(f"re-protect of {vm.name}: {e.recovery_host} did not confirm the sync",
                           action="Nothing is lost: the next sync fetches the blocks again.")
        return SyncResult(full, end.compared, end.blocks, end.bytes)

    def _name(self, vm_id: str, fallback: str) -> str:
        return next((vm.name for vm in self.rt.hv.list() if vm.vm_id == vm_id), fallback)
