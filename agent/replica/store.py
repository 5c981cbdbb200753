"""The replicas a recovery host keeps: per VM, the vault store's format (packs, an index,
points as Merkle trees over block maps; ``cloudsvc.vaultstore``) in its own directory, plus
the point records and the replica disks.

    REPLICA_DIR/<vm_id>/pairing.json   who may ship this VM here (``pairings``)
    REPLICA_DIR/<vm_id>/packs/...      packs (a LocalDirBackend rooted at the VM's directory)
    REPLICA_DIR/<vm_id>/index.db       the store's index (chunks, packs, points, sessions, pins)
    REPLICA_DIR/<vm_id>/points.json    the point records: [{point_id, created_at, kind, epoch,
                                       logical_bytes, stored_bytes, committed_at}], oldest first
    REPLICA_DIR/<vm_id>/disks/, applied.json   the latest point applied (``disks``)

Write ordering (as in the vault, docs/design.md "Site-to-site data path"): chunks durable and
indexed before ``PutChunks`` answers → ``commit_point`` writes the tree nodes and then the
point row → the point record is appended to ``points.json`` (write_atomic) → the point is
applied to the replica disks → the primary is acknowledged. A point row without a record is
not a recovery point: a restart deletes it (``recover``), the primary's retried commit makes it
again with the same id. Retention (the pairing's policy, ``points_to_keep``) runs after each
commit: the record goes first, then the store's point row; garbage collection follows.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import asdict, dataclass

from agent.replica.disks import ReplicaDisks
from agent.replica.pairings import Pairing, Pairings, check_vm_id
from asrclock import Clock
from asrerrors import AsrError, NotFound, StateConflict
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


class ReplicaVm:
    """One VM's replica: its store, point records and disks. ``lock`` serialises commits,
    applies and retention of the VM (uploads go on beside them: the store is thread-safe)."""

    def __init__(self, directory: str, vm_id: str, clock: Clock) -> None:
        self.dir = directory
        self.vm_id = vm_id
        self.clock = clock
        self.store = VaultStore(LocalDirBackend(directory), os.path.join(directory, "index.db"), clock)
        self.disks = ReplicaDisks(directory)
        self.records_path = os.path.join(directory, "points.json")
        self.lock = threading.Lock()
        self.apply_error = ""   # why the disks are not at the latest point ("" when they are)

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
        acknowledged) and finish an apply a crash interrupted."""
        with self.lock:
            known = {r.point_id for r in self.records()}
            for p in self.store.list_points(self.vm_id):
                if p.point_id not in known:
                    self.store.delete_point(p.point_id, force=True)
            latest = self.latest()
            st = self.disks.state()
            if latest is not None and (st.applying or (st.point_id != latest.point_id and not st.encrypted)):
                how = self._apply(latest, None, "")
                log.info("replica disks redone from the store", extra={"fields": {
                    "vm_id": self.vm_id, "point": latest.point_id, "how": how, "interrupted": st.applying}})

    def commit(self, session_id: str, disks: list[DiskDelta], base: str | None, kind: PointKind,
               created_at: float, epoch: int, uploaded_bytes: int, pairing: Pairing) -> tuple[PointInfo, str]:
        """Make the point durable, record it, apply it to the disks, apply retention; returns
        the point and how it was applied."""
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
            latest = records[-1].point_id
            how = "current"
            if latest == point.point_id:
                how = self._apply(point, disks, base or "")
            self._retain(records, pairing)
            return point, how

    def _apply(self, point: PointInfo, disks: list[DiskDelta] | None, base: str) -> str:
        """Bring the replica disks to ``point``. A failure does not fail the commit (the point
        is durable and recorded): the marker stays set, so the next commit or start redoes
        the apply in full, and the reports say Warning until then."""
        try:
            how = self.disks.apply(self.store, point, disks, base)
        except (AsrError, OSError) as err:
            self.apply_error = f"replica disks not brought to {point.point_id}: {err}"
            log.error("replica apply failed", extra={"fields": {"vm_id": self.vm_id, "point": point.point_id,
                                                                "error": str(err)}})
            return "failed"
        self.apply_error = ""
        return how

    def _retain(self, records: list[PointRecord], pairing: Pairing) -> None:
        keep = points_to_keep(records, retention_of(pairing), self.clock.now())
        keep.add(self.disks.state().point_id)   # the disks' point stays readable from the store
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

    def recover(self) -> None:
        for p in self.pairings.all():
            try:
                self.vm(p.vm_id).recover()
            except Exception:  # noqa: BLE001 - one damaged replica must not stop the others
                log.exception("recovering the replica of %s failed", p.vm_name)

    def release(self, vm_id: str, delete_data: bool) -> None:
        """Stop holding the replica: the pairing goes first (no more sessions are admitted),
        then, when asked, the data."""
        self.pairings.drop(vm_id)
        with self._lock:
            r = self._vms.pop(vm_id, None)
        if r is not None:
            with r.lock:
                r.close()
        if delete_data:
            shutil.rmtree(os.path.join(self.root, check_vm_id(vm_id)), ignore_errors=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def close(self) -> None:
        with self._lock:
            vms = list(self._vms.values())
            self._vms.clear()
        for r in vms:
            with r.lock:
                r.close()
