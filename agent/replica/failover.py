"""Failover on the recovery host (site to site): the VMs made of a replica, and the blocks a
primary fetches from them when it fails back (docs/design.md, "Site-to-site failover").

    REPLICA_DIR/<vm_id>/made.json    {"test": {...}, "failover": {...}}: per kind, the VM made
                                     (name, point, whether it runs on the replica disks, the
                                     directory of its own disks)
    REPLICA_DIR/<vm_id>/test/disks/, failover/disks/   copies of a point (VHDX)

A **failover** to the point the replica disks hold runs the VM on those disks: nothing is
copied, so the time to a running VM does not depend on the disks' size (bench/
site_to_site_rto.py). The disks are *held* (``ReplicaDisks.hold``, durable) before the VM
exists, so the applier never writes under a running VM. Any other point, and every **test**
failover, runs on a copy of the point written from the replica store (the copy is local: no
byte crosses the network); a test VM on its own copy leaves the replica disks and the
replication going on untouched.

Ordering (each step durable before the next): the command's epoch is held by the pairing (a
primary still shipping with the older epoch is Fenced from here on) → the disks are held or
the copy is written and fsynced → ``made.json`` names the VM → the VM is defined and started.
A command delivered again finds its VM in ``made.json`` and answers the same; a crash before
the VM was defined is redone by the redelivery. Deleting goes the other way: the VM is
stopped and deleted, then its disks: a copy is removed; held replica disks get the held
point's content back in the blocks the VM wrote (its change tracking, started clean when it
was made, says which), so the next apply is incremental — or, when that tracking cannot be
trusted, they hold no point and the next apply redoes them in full from the store; then the
entry.

One owner: :class:`ReplicaFailovers` alone writes ``made.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from agent.hypervisor import LocalHypervisor
from agent.replica.applier import Applier
from agent.replica.disks import ReplicaDisks
from agent.replica.store import ReplicaHost, ReplicaVm
from agent.replica.sync import SentBlocks
from asrerrors import AlreadyExists, AsrError, NotFound, PermissionDenied, StateConflict, UsageError
from asrpb import control_pb2, failover_pb2
from cloudsvc.failover.failback import diff_reply
from diskimage import DiskImage, open_disk, probe
from durablefile import write_atomic
from vmspec import NicSpec

log = logging.getLogger(__name__)

KINDS = ("test", "failover")
# how long a failover waits for the replica disks to reach the point (a planned failover's
# final point is applied incrementally right after it was acknowledged)
APPLY_WAIT_S = 600.0


@dataclass(frozen=True)
class MadeVm:
    kind: str
    name: str
    point_id: str
    in_place: bool          # runs on the replica disks themselves
    dir: str                # its own disks' directory ("" when in place)


class ReplicaFailovers:
    def __init__(self, host: ReplicaHost, applier: Applier, hv: LocalHypervisor) -> None:
        self.host = host
        self.applier = applier
        self.hv = hv
        self._lock = threading.Lock()

    # ---- made.json ------------------------------------------------------------------------------
    def _path(self, vm_id: str) -> str:
        return os.path.join(self.host.vm(vm_id).dir, "made.json")

    def made(self, vm_id: str) -> dict[str, MadeVm]:
        try:
            with open(self._path(vm_id)) as f:
                return {k: MadeVm(**v) for k, v in json.load(f).items()}
        except FileNotFoundError:
            return {}

    def _save(self, vm_id: str, made: dict[str, MadeVm]) -> None:
        write_atomic(self._path(vm_id), json.dumps({k: asdict(v) for k, v in made.items()}, indent=1).encode())

    # ---- commands -------------------------------------------------------------------------------
    def failover(self, body: control_pb2.ReplicaFailover, epoch: int) -> str:
        if body.kind not in KINDS:
            raise UsageError(f"failover kind {body.kind!r} is not one of {', '.join(KINDS)}")
        r, pairing_name = self._replica(body.vm_id, body.pairing_id)
        if body.kind == "failover" and epoch:
            # the recovery side is active from this epoch: the primary's sessions are Fenced
            self.host.pairings.raise_epoch(body.vm_id, epoch)
        t0 = time.monotonic()
        with self._lock:
            made = self.made(body.vm_id)
            point_id = _resolve(r, body.point_id)
            old = made.get(body.kind)
            if old is not None and old.name == body.name and old.point_id == point_id and self._defined(old):
                if body.start:
                    self.hv.start(old.name)
                return self._said(old, body, "already made", 0.0)
            if old is not None:       # change point: the VM of the earlier point goes first
                self._remove(r, old)
                del made[body.kind]
                self._save(body.vm_id, made)
            entry = self._disks_for(r, body, point_id, in_place_ok=old is None)
            made[body.kind] = entry
            self._save(body.vm_id, made)
            paths = self._paths(r, entry)
            self._define(body, entry, paths)
            if entry.in_place:   # what the VM writes to the replica disks is tracked: see _remove
                self.hv.track_from_now(entry.name)
                SentBlocks(r.dir).start(self._sizes(entry.name))
            if body.start:
                self.hv.start(entry.name)
        took = time.monotonic() - t0
        log.info("replica failover", extra={"fields": {"vm": pairing_name, "kind": body.kind, "name": entry.name,
                                                       "point": point_id, "in_place": entry.in_place,
                                                       "seconds": round(took, 3)}})
        return self._said(entry, body, "started" if body.start else "made", took)

    def cleanup(self, body: control_pb2.ReplicaCleanup) -> str:
        if body.kind not in KINDS or body.action not in ("stop", "start", "delete"):
            raise UsageError(f"cleanup {body.action!r} of kind {body.kind!r} is not known")
        try:
            r, _ = self._replica(body.vm_id, body.pairing_id)
        except NotFound:
            return f"no replica of {body.vm_name} here: nothing to {body.action}"
        with self._lock:
            made = self.made(body.vm_id)
            entry = made.get(body.kind)
            if entry is None:
                return f"no {body.kind} VM of {body.vm_name} on this host: nothing to {body.action}"
            if body.action in ("stop", "start"):
                if self._defined(entry):
                    (self.hv.stop if body.action == "stop" else self.hv.start)(entry.name)
                return f"{body.kind} VM {entry.name} {'shut down' if body.action == 'stop' else 'started'}"
            self._remove(r, entry)
            del made[body.kind]
            self._save(body.vm_id, made)
        return (f"{body.kind} VM {entry.name} deleted"
                + ("; the replica disks follow the replica's points again" if entry.in_place else ", with its disks"))

    def release(self, vm_id: str) -> list[str]:
        """The replica is being released (protection disabled): a test VM goes with it; a
        failover VM stays — it is the production VM now — and the directories of its disks are
        returned, for the release to keep."""
        try:
            r = self.host.vm(vm_id)
        except NotFound:
            return []
        with self._lock:
            made = self.made(vm_id)
            test = made.pop("test", None)
            if test is not None:
                self._remove(r, test)
                self._save(vm_id, made)
            keep = made.get("failover")
        if keep is None:
            return []
        log.info("replica released; its failover VM keeps its disks", extra={"fields": {
            "vm_id": vm_id, "name": keep.name, "in_place": keep.in_place}})
        return [r.disks.dir if keep.in_place else keep.dir]

    # ---- failback: the primary fetches the blocks that differ -------------------------------------
    def diff(self, vm_id: str, requests: Iterable[failover_pb2.BlockHashes], peer: str
             ) -> Iterator[failover_pb2.BlockDiff]:
        """FailbackData.Diff for the VM's primary (already admitted by ``replica_api``): the
        blocks come from the failover VM's disks, which must be shut down (the failback job
        stops it first)."""
        paths = self._failback_disks(vm_id)
        images: dict[int, DiskImage] = {}
        compared = sent = 0
        try:
            for req in requests:
                if not 0 <= req.disk_index < len(paths):
                    raise NotFound(f"the failover VM has no disk {req.disk_index}")
                img = images.get(req.disk_index)
                if img is None:
                    img = images[req.disk_index] = open_disk(paths[req.disk_index], readonly=True)
                out = diff_reply(req, img.virtual_size, img.read)
                compared += len(req.hashes)
                sent += len(out.blocks)
                yield out
        finally:
            for img in images.values():
                img.close()
            log.info("failback blocks served", extra={"fields": {"vm_id": vm_id, "blocks_compared": compared,
                                                                  "blocks_sent": sent, "peer": peer}})

    def _failback_disks(self, vm_id: str) -> list[str]:
        entry = self.made(vm_id).get("failover")
        if entry is None:
            raise NotFound(f"this host ran no failover VM of {vm_id}: there is nothing to fail back from")
        vm = self.hv.get(entry.name)
        if vm.power_state == "Running":
            raise StateConflict(f"failover VM {entry.name} is running: its disks change while they are compared",
                                action="Shut it down first (the failback job does).")
        return [d.path for d in vm.disks]

    # ---- internals ----------------------------------------------------------------------------
    def _replica(self, vm_id: str, pairing_id: str) -> tuple[ReplicaVm, str]:
        p = self.host.pairings.get(vm_id)
        if p is None:
            raise NotFound(f"this host holds no replica of VM {vm_id}")
        if pairing_id and pairing_id != p.pairing_id:
            raise PermissionDenied(f"pairing {pairing_id!r} is not the pairing of VM {p.vm_name} on this host")
        return self.host.vm(vm_id), p.vm_name

    def _disks_for(self, r: ReplicaVm, body: control_pb2.ReplicaFailover, point_id: str, in_place_ok: bool) -> MadeVm:
        """Hold the replica disks (a failover to the point they hold), or write a copy of the point."""
        # (an encrypted replica's disks never hold a point: waiting for them would be in vain)
        if body.kind == "failover" and in_place_ok and point_id == r.records()[-1].point_id \
                and not r.disks.state().encrypted:
            if not self.applier.wait_applied(r.vm_id, point_id, APPLY_WAIT_S):
                raise StateConflict(f"the replica disks of {body.vm_name} did not reach point {point_id} within "
                                    f"{APPLY_WAIT_S:.0f} s", causes=(r.apply_error or "The applier is behind.",),
                                    action="Run the failover again, or choose another point (--point).")
            with r.apply_lock:
                st = r.disks.state()
                if st.point_id == point_id and not st.applying and not st.encrypted:
                    r.disks.hold(body.name)
                    return MadeVm(body.kind, body.name, point_id, True, "")
        out = os.path.join(r.dir, body.kind)
        shutil.rmtree(out, ignore_errors=True)   # a copy left by a crash: start over
        with r.lock:
            r.reading.add(point_id)
        try:
            point = r.store.get_point(point_id)
            ReplicaDisks(out).write_copy(r.store, point)
        finally:
            with r.lock:
                r.reading.discard(point_id)
        return MadeVm(body.kind, body.name, point_id, False, out)

    def _paths(self, r: ReplicaVm, entry: MadeVm) -> list[str]:
        disks = ReplicaDisks(r.dir) if entry.in_place else ReplicaDisks(entry.dir)
        point = r.store.get_point(entry.point_id)
        return [disks.path(d.disk_index) for d in point.disks]

    def _sizes(self, name: str) -> list[int]:
        return [probe(d.path).virtual_size for d in self.hv.get(name).disks]

    def _defined(self, entry: MadeVm) -> bool:
        try:
            self.hv.get(entry.name)
        except NotFound:
            return False
        return True

    def _define(self, body: control_pb2.ReplicaFailover, entry: MadeVm, paths: list[str]) -> None:
        if self._defined(entry):
            vm = self.hv.get(entry.name)
            if [d.path for d in vm.disks] != paths:
                raise AlreadyExists(f"host already has a VM named {entry.name!r}, not made of this replica",
                                    action="Rename or remove that VM, then run the operation again.")
            return
        nics = [NicSpec("dhcp", network=n) for n in body.networks] or [NicSpec("dhcp")]
        self.hv.create(entry.name, paths[0], paths[1:], guest_os=body.guest_os or "windows-server-2019",
                       generation=body.generation or 1, cpus=body.cpus or 2, memory_mb=body.memory_mb or 2048,
                       nics=nics)

    def _remove(self, r: ReplicaVm, entry: MadeVm) -> None:
        written = None
        if self._defined(entry):
            if self.hv.get(entry.name).power_state == "Running":
                self.hv.stop(entry.name)
            if entry.in_place:   # what it wrote: its tracking, and what re-protect's syncs took from it
                written = SentBlocks(r.dir).merged(self.hv.written_blocks(entry.name), self._sizes(entry.name))
            self.hv.delete(entry.name)
        if entry.in_place:
            # re-arm the replica: the blocks the VM wrote get the held point's content back (the
            # next apply is then incremental), or, when its tracking cannot be trusted, the
            # disks hold no point and the next apply redoes them in full
            with r.apply_lock:
                try:
                    if written is None:
                        raise ValueError("the failover VM's change tracking cannot be trusted")
                    r.disks.restore(r.store, r.store.get_point(entry.point_id), written)
                except (ValueError, AsrError, OSError) as exc:
                    log.warning("replica disks redone in full", extra={"fields": {"vm_id": r.vm_id,
                                                                                   "why": str(exc)}})
                    r.disks.let_go()
                SentBlocks(r.dir).clear()
            self.applier.point_made(r.vm_id)   # bring them to the newest point
        elif entry.dir:
            shutil.rmtree(entry.dir, ignore_errors=True)

    def _said(self, entry: MadeVm, body: control_pb2.ReplicaFailover, what: str, took: float) -> str:
        nets = ", ".join(n or "(none)" for n in body.networks) or "(none)"
        disks = "on the replica disks (no copy)" if entry.in_place else "on a copy of the point"
        return (f"{body.kind} VM {entry.name} {what} on {body.host} from point {entry.point_id}, {disks}, "
                f"in {took:.2f} s; NICs on {nets}")


def _resolve(r: ReplicaVm, point_id: str) -> str:
    records = r.records()
    if not records:
        raise NotFound("the replica holds no point yet", action="Wait for the first copy to complete.")
    if point_id in ("", "latest"):
        return records[-1].point_id
    if point_id == "latest-app-consistent":
        app = [rec for rec in records if rec.kind == "app"]
        if not app:
            raise NotFound("the replica holds no app-consistent point")
        return app[-1].point_id
    if all(rec.point_id != point_id for rec in records):
        raise NotFound(f"point {point_id} is not a point of this replica",
                       causes=(f"It holds {len(records)} points, {records[0].point_id} to {records[-1].point_id}.",))
    return point_id
