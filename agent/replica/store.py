"""The replicas a recovery host keeps: per VM, the vault store's format (packs, an index,
points as Merkle trees over block maps; ``cloudsvc.vaultstore``) in its own directory, plus
the point records and the replica disks.

    REPLICA_DIR/<vm_id>/pairing.json   who may ship this VM here (``pairings``)
    REPLICA_DIR/<vm_id>/packs/...      packs (a LocalDirBackend rooted at the VM's directory)
    REPLICA_DIR/<vm_id>/index.db       the store's index (chunks, packs, points, sessions, pins)
    REPLICA_DIR/<vm_id>/points.json    the point records: [{point_id, created_at, kind, epoch,
                                       logical_bytes, stored_bytes, committed_at}], oldest first
    REPLICA_DIR/<vm_id>/disks/, applied.json   the point the disks hold (``disks``)

Write ordering (as in the vault, docs/design.md "Site-to-site data path"): chunks durable and
indexed before ``PutChunks`` answers → ``commit_point`` writes the tree nodes and then the
point row → the point record is appended to ``points.json`` (write_atomic) → the primary is
acknowledged (the vault's guarantee: durable and recorded). The replica disks follow
afterwards: the host's applier (``applier``) calls ``apply_latest``, which brings them to the
newest recorded point, skipping any points that arrived meanwhile. A point row without a
record is not a recovery point: a restart deletes it (``recover``), the primary's retried
commit makes it again with the same id. Retention (the pairing's policy, ``points_to_keep``)
runs after each commit: the record goes first, then the store's point row; garbage collection
follows. It never deletes the point the disks hold nor the point being applied.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass

from agent.replica.disks import Applied, ReplicaDisks
from agent.replica.pairings import Pairing, Pairings, check_vm_id
from asrclock import Clock
from asrerrors import AsrError, DiskFull, NotFound, StateConflict
from chunkfmt import BlockMap
from cloudsvc.vaultstore import (
    DiskDelta,
    LocalDirBackend,
    PointInfo,
    PointKind,
    RetentionPolicy,
    VaultStore,
    points_to_keep,
)
from durablefile import write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PointRecord:
    point_id: str
    created_at: float
    kind: str
    epoch: int
    logical_bytes: int
    stored_bytes: int
    committed_at: float


def retention_of(p: Pairing) -> RetentionPolicy:
    pol = p.policy
    return RetentionPolicy(float(pol.copy_frequency_seconds or 300), pol.retention_hours, pol.app_consistent_hours)


def _complete(st: Applied) -> str:
    """The point the disks hold in full ("" when an apply is unfinished or they hold none)."""
    return "" if st.applying or st.encrypted else st.point_id


class ReplicaVm:
    """One VM's replica: its store, point records and disks. ``lock`` serialises commits and
    retention of the VM, and is held only briefly by the apply (to choose its target), so a
    commit never waits for an apply; ``apply_lock`` serialises applies and closing. Lock order:
    ``apply_lock`` before ``lock``. Uploads go on beside both: the store is thread-safe."""

    def __init__(self, directory: str, vm_id: str, clock: Clock) -> None:
        self.dir = directory
        self.vm_id = vm_id
        self.clock = clock
        self.store = VaultStore(LocalDirBackend(directory), os.path.join(directory, "index.db"), clock)
        self.disks = ReplicaDisks(directory)
        self.records_path = os.path.join(directory, "points.json")
        self.lock = threading.Lock()
        self.apply_lock = threading.Lock()
        self.apply_error = ""   # why the disks are not at the latest point ("" when they are)
        # under ``lock``: the point an apply is bringing the disks to (retention keeps it; the
        # marker names it durably only once the apply starts writing)
        self._target = ""
        # under ``lock``: the newest commit's (point, base, changed blocks), so that an apply
        # of exactly that point onto its base writes only those blocks
        self._last_commit: tuple[str, str, list[DiskDelta]] | None = None
        self._closed = False   # under ``apply_lock``
        # under ``lock``: points being read by a failover's copy (retention keeps them)
        self.reading: set[str] = set()

    def records(self) -> list[PointRecord]:
        try:
            with open(self.records_path) as f:
                return [PointRecord(**r) for r in json.load(f)]
        except FileNotFoundError:
            return []

    def _save(self, records: list[PointRecord]) -> None:
        write_atomic(self.records_path, json.dumps([asdict(r) for r in records], indent=1).encode())

    def latest(self) -> PointInfo | None:
        recs = self.records()
        return self.store.get_point(recs[-1].point_id) if recs else None

    def recover(self) -> None:
        """After a restart: drop point rows without a record (a commit that was never
        acknowledged) and bring the disks to the newest point: in full when a crash
        interrupted an apply, by the blocks that differ when it came between an acknowledged
        commit and its apply (the disks hold a complete, older point)."""
        with self.apply_lock, self.lock:
            known = {r.point_id for r in self.records()}
            for p in self.store.list_points(self.vm_id):
                if p.point_id not in known:
                    self.store.delete_point(p.point_id, force=True)
            latest = self.latest()
            st = self.disks.state()
            if latest is not None and not st.held_by and (
                    st.applying or (st.point_id != latest.point_id and not st.encrypted)):
                held = _complete(st)
                how = self._apply(latest, self._diff(held, latest), held)
                log.info("replica disks redone from the store", extra={"fields": {
                    "vm_id": self.vm_id, "point": latest.point_id, "how": how, "interrupted": st.applying}})

    def commit(self, session_id: str, disks: list[DiskDelta], base: str | None, kind: PointKind,
               created_at: float, epoch: int, uploaded_bytes: int, pairing: Pairing) -> PointInfo:
        """Make the point durable, record it, apply retention; returns the point. The disks are
        not touched: the applier brings them to the newest point afterwards (``apply_latest``)."""
        with self.lock:
            point = self.store.commit_point(session_id, self.vm_id, disks, base, kind, created_at)
            records = self.records()
            if all(r.point_id != point.point_id for r in records):
                now = self.clock.now()
                records.append(PointRecord(point.point_id, point.created_at, point.kind, epoch,
                                           sum(d.virtual_size for d in point.disks), uploaded_bytes, now))
                records.sort(key=lambda r: (r.created_at, r.point_id))
                self._save(records)
            self.store.end_session(session_id)
            if records[-1].point_id == point.point_id:
                self._last_commit = (point.point_id, base or "", disks)
            self._retain(records, pairing)
            return point

    def apply_latest(self) -> str:
        """Bring the replica disks to the newest recorded point (the applier's unit of work;
        points recorded meanwhile are skipped: only the newest matters). Returns how:
        "incremental", "full", "encrypted", "failed", "current", "held" or "none"."""
        with self.apply_lock:
            if self._closed:
                return "none"
            with self.lock:
                records = self.records()
                if not records:
                    return "none"
                target = records[-1].point_id
                st = self.disks.state()
                if st.held_by:
                    return "held"   # a failover VM runs on them (agent.replica.failover)
                if st.point_id == target and not st.applying:
                    return "current"
                point = self.store.get_point(target)
                deltas, base = None, ""
                if self._last_commit is not None and self._last_commit[0] == target:
                    _, base, deltas = self._last_commit
                self._target = target
            try:
                if deltas is None or base != st.point_id:
                    # not the newest commit onto the disks' point: the blocks that differ
                    # between the two points, or a full apply when they cannot be had
                    deltas, base = self._diff(_complete(st), point), st.point_id
                return self._apply(point, deltas, base)
            finally:
                with self.lock:
                    self._target = ""

    def _diff(self, held: str, point: PointInfo) -> list[DiskDelta] | None:
        """The blocks of ``point`` that differ from the point the disks hold, per disk (by the
        two block maps: reading them is a walk of the trees, no chunk is read); None when a
        full apply is needed (no such point, or the disks' layout changed)."""
        if not held:
            return None
        try:
            old = self.store.get_point(held)
        except NotFound:
            return None
        if [(d.disk_index, d.virtual_size) for d in old.disks] != [(d.disk_index, d.virtual_size)
                                                                   for d in point.disks]:
            return None
        out = []
        for d in point.disks:
            # both maps list every block in order (ZERO_ID for a zero block, which the
            # incremental apply writes as zeros): same size, so they pair up block by block
            changes = {b: c for (b, c), (_, oc) in zip(self.store.block_map(point.point_id, d.disk_index),
                                                       self.store.block_map(held, d.disk_index), strict=True)
                       if c != oc}
            out.append(DiskDelta(d.virtual_size, BlockMap.from_mapping(changes)))
        return out

    def _apply(self, point: PointInfo, disks: list[DiskDelta] | None, base: str) -> str:
        """Bring the replica disks to ``point``. A failure does not fail the commit (the point
        is durable and recorded): the marker stays set, so the next apply (of the next point)
        or start redoes it in full, and the reports say Warning until then."""
        t0 = time.monotonic()
        try:
            how = self.disks.apply(self.store, point, disks, base)
        except (AsrError, OSError) as err:
            self.apply_error = f"replica disks not brought to {point.point_id}: {err}"
            log.error("replica apply failed", extra={"fields": {"vm_id": self.vm_id, "point": point.point_id,
                                                                "error": str(err)}})
            return "failed"
        self.apply_error = ""
        # the apply runs after the primary was acknowledged: its time is logged on its own to
        # show how far the disks lag behind the points
        log.info("replica disks applied", extra={"fields": {"vm_id": self.vm_id, "point": point.point_id,
                                                            "how": how,
                                                            "seconds": round(time.monotonic() - t0, 3)}})
        return how

    def _retain(self, records: list[PointRecord], pairing: Pairing) -> None:
        keep = points_to_keep(records, retention_of(pairing), self.clock.now())
        st = self.disks.state()
        # the disks' point stays readable from the store (a failover or a redo may need it, and
        # the next apply diffs against it), and so does the point an apply is writing
        keep |= {st.point_id, st.applying, self._target, *self.reading}
        gone = [r for r in records if r.point_id not in keep]
        if not gone:
            return
        self._save([r for r in records if r.point_id in keep])
        for r in gone:
            try:
                self.store.delete_point(r.point_id)
            except (NotFound, StateConflict):
                pass  # already gone, or pinned by a reader: the store keeps it until released
        self.store.gc()

    def stored_bytes(self) -> int:
        return self.store.storage_bytes()

    def close(self) -> None:
        """Close the store once no apply and no commit uses it (an apply in progress ends first)."""
        with self.apply_lock:
            self._closed = True
            with self.lock:
                self.store.close()


class ReplicaHost:
    """Every replica on this host (one owner: the open stores, the pairings)."""

    def __init__(self, root: str, clock: Clock) -> None:
        self.root = root
        self.clock = clock
        self.pairings = Pairings(root)
        self._vms: dict[str, ReplicaVm] = {}
        self._lock = threading.Lock()

    def vm(self, vm_id: str) -> ReplicaVm:
        """The VM's open replica (opened on first use); NotFound when no pairing holds it."""
        check_vm_id(vm_id)
        with self._lock:
            r = self._vms.get(vm_id)
            if r is None:
                if self.pairings.get(vm_id) is None:
                    raise NotFound(f"this host holds no replica of VM {vm_id}")
                r = ReplicaVm(os.path.join(self.root, vm_id), vm_id, self.clock)
                self._vms[vm_id] = r
            return r

    def check_room(self, vm_id: str, vm_name: str, disks: list[int]) -> None:
        """A new replica must fit: its disks' virtual size against the free space of this host's
        replica directory, less what the replicas held already may still grow into (their
        disks' size less what their directories take now). The vault's placement counts the
        same from the space hosts last reported; this is the check at the moment of truth.
        DiskFull (ASR-0061) naming both figures otherwise."""
        need = sum(disks)
        os.makedirs(self.root, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        promised = 0
        for p in self.pairings.all():
            if p.vm_id == vm_id:
                continue
            size = sum(int(d.virtual_size) for d in p.disks)
            promised += max(0, size - _dir_bytes(os.path.join(self.root, p.vm_id)))
        if need > free - promised:
            raise DiskFull(
                f"the replica of {vm_name} needs up to {need} bytes; the replica directory {self.root} has {free} "
                f"bytes free, {promised} of them promised to the replicas held already",
                causes=("The host filled up since it last reported its free space to the vault.",),
                action=f"Protect {vm_name} to another recovery host (asr vm protect {vm_name} --recovery-host H), "
                       "or free space in the replica directory.")

    def recover(self) -> None:
        for p in self.pairings.all():
            try:
                self.vm(p.vm_id).recover()
            except Exception:  # noqa: BLE001 - one damaged replica must not stop the others
                log.exception("recovering the replica of %s failed", p.vm_name)

    def release(self, vm_id: str, delete_data: bool, keep: list[str] | tuple[str, ...] = ()) -> None:
        """Stop holding the replica: the pairing goes first (no more sessions are admitted),
        then, when asked, the data — all but the directories in ``keep`` (the disks of a VM a
        failover made of the replica, which outlives its protection)."""
        self.pairings.drop(vm_id)
        with self._lock:
            r = self._vms.pop(vm_id, None)
        if r is not None:
            r.close()
        if not delete_data:
            return
        root = os.path.join(self.root, check_vm_id(vm_id))
        kept = {os.path.abspath(k) for k in keep}
        if not kept:
            shutil.rmtree(root, ignore_errors=True)
            return
        for name in os.listdir(root) if os.path.isdir(root) else []:
            path = os.path.abspath(os.path.join(root, name))
            if path in kept:
                continue
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def close(self) -> None:
        with self._lock:
            vms = list(self._vms.values())
            self._vms.clear()
        for r in vms:
            r.close()


def _dir_bytes(path: str) -> int:
    """Bytes the files under ``path`` take on disk (allocated blocks: sparse disks count what they hold)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total
