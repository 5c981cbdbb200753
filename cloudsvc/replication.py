"""The cloud's side of replication: one vault store per storage account, who may write what,
replication status (RPO, health, initial progress), and retention with garbage collection.

Write ordering of a cycle (the agent drives it; see ``proto/asrpb/replication.proto``):

1. chunks are durable and indexed in the store when ``PutChunks`` returns (the store seals its
   open pack at the end of every call);
2. ``CommitPoint`` writes the point row in the store's index only after every chunk it
   references is indexed (``VaultStore.commit_point``), then records the point's facts and
   the VM's status in the metadata DB, and only then answers: a point is durable before it
   is acknowledged. A crash between the two leaves a point without its facts (shown with
   size 0), never facts without a point;
3. the agent forgets its dirty set only after the acknowledgement.

State lives in the metadata DB (``replication_status``, ``recovery_points``) and in each
store's index DB under ``DATA_DIR/replication/<vault>/<storage>.index.db``: nothing another
process would need is kept only in memory (the stores' open packs are flushed per call).

Health: with copy frequency F, a protected VM whose latest point is older than
``2F + 60 s`` is Warning and older than ``6F + 300 s`` Critical (the RPO is late); before the
first point it is Normal while the initial replication reports progress, Warning when its last
attempt failed.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asrclock import Clock
from asrerrors import AsrError, NotFound, PermissionDenied, StateConflict
from asrpb import inventory_pb2
from certs.identity import Identity
from chunkfmt import vault_id_key
from cloudsvc.inventory import Inventory, loads_policy
from cloudsvc.protection import Protection
from cloudsvc.vaults import Vaults
from cloudsvc.vaultstore import (
    BlobBackend,
    Damage,
    DiskDelta,
    LocalDirBackend,
    PointInfo,
    PointKind,
    RetentionPolicy,
    VaultStore,
)
from sqlitestore.database import Database

log = logging.getLogger(__name__)

WARNING_FACTOR, WARNING_GRACE_S = 2.0, 60.0
CRITICAL_FACTOR, CRITICAL_GRACE_S = 6.0, 300.0
MAINTENANCE_SECONDS = float(os.environ.get("ASR_MAINTENANCE_SECONDS", "60"))
GC_EVERY_SECONDS = 3600.0


@dataclass(frozen=True)
class Health:
    state: str  # Normal | Warning | Critical
    errors: list[str]


def health_of(policy: inventory_pb2.Policy, last_point_at: float, last_error: str, now: float) -> Health:
    freq = float(policy.copy_frequency_seconds or 300)
    if not last_point_at:
        if last_error:
            return Health("Warning", [f"Initial replication is failing: {last_error}"])
        return Health("Normal", [])
    rpo = now - last_point_at
    errs = [f"Last error: {last_error}"] if last_error else []
    if rpo > CRITICAL_FACTOR * freq + CRITICAL_GRACE_S:
        return Health("Critical", [f"The latest recovery point is {rpo:.0f}s old (copy frequency {freq:.0f}s)."]
                      + errs)
    if rpo > WARNING_FACTOR * freq + WARNING_GRACE_S:
        return Health("Warning", [f"The latest recovery point is {rpo:.0f}s old (copy frequency {freq:.0f}s)."]
                      + errs)
    return Health("Normal", [])


def retention_of(policy: inventory_pb2.Policy) -> RetentionPolicy:
    return RetentionPolicy(float(policy.copy_frequency_seconds or 300), int(policy.retention_hours),
                           int(policy.app_consistent_hours))


class Replication:
    def __init__(self, db: Database, clock: Clock, vaults: Vaults, inventory: Inventory, protection: Protection,
                 data_dir: str, stopping: threading.Event | None = None) -> None:
        self.db = db
        self.clock = clock
        self.vaults = vaults
        self.inventory = inventory
        self.protection = protection
        self.root = os.path.join(data_dir, "replication")
        self.stopping = stopping or threading.Event()
        self._stores: dict[tuple[str, str], VaultStore] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_gc = 0.0
        # Callables (vault_id, vm_id) -> point ids retention must keep (e.g. failover's pins).
        self.pins: list[Callable[[str, str], set[str]]] = []

    # ---- stores -----------------------------------------------------------------------------
    def store(self, vault_id: str, storage: str) -> VaultStore:
        key = (vault_id, storage)
        with self._lock:
            st = self._stores.get(key)
            if st is not None:
                return st
            row = self.vaults.storage(vault_id, storage)
            if row["backend"] == "blob":
                container = f"asr-{vault_id}-{storage}".lower()[:63]
                backend: Any = BlobBackend(container, connection_string=row["connection"])
            else:
                backend = LocalDirBackend(row["location"])
            os.makedirs(os.path.join(self.root, vault_id), exist_ok=True)
            st = VaultStore(backend, os.path.join(self.root, vault_id, f"{storage}.index.db"), self.clock)
            self._stores[key] = st
            return st

    def close(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for st in self._stores.values():
                try:
                    st.flush()
                except AsrError:
                    log.exception("flushing a vault store at shutdown failed")
                st.close()
            self._stores.clear()

    # ---- authorisation -------------------------------------------------------------------------
    def authorise(self, ident: Identity, vm_id: str) -> tuple[sqlite3.Row, inventory_pb2.Policy]:
        """The protected item of ``vm_id`` when ``ident`` is the agent of the host running it."""
        item = self.protection.item(ident.vault_id, vm_id)
        if item is None:
            raise PermissionDenied(f"VM {vm_id} is not protected in this agent's vault",
                                   action="Enable protection of the VM first (asr vm protect).")
        vm = self.db.one("SELECT host FROM vms WHERE vault_id=? AND vm_id=?", (ident.vault_id, vm_id))
        if vm is None or vm["host"] != ident.name:
            raise PermissionDenied(f"agent {ident.name} is not the host of VM {vm_id}",
                                   causes=("The VM moved to another host, or the agent names another VM.",))
        if item["state"] in ("DisablingProtection",):
            raise StateConflict(f"protection of VM {vm_id} is being disabled")
        return item, loads_policy(item["policy"])

    def _session(self, ident: Identity, token: str) -> tuple[VaultStore, str, str]:
        storage, _, sid = token.partition(":")
        if not sid:
            raise NotFound(f"upload session {token!r} is malformed")
        st = self.store(ident.vault_id, storage)
        vm_id = st.db.session_vm(sid)
        if vm_id is None:
            raise NotFound(f"upload session {sid} is not open (ended or expired)",
                           action="Begin a new cycle.")
        self.authorise(ident, vm_id)
        return st, sid, vm_id

    # ---- the data path -------------------------------------------------------------------------
    def begin_cycle(self, ident: Identity, vm_id: str) -> tuple[str, PointInfo | None]:
        _, policy = self.authorise(ident, vm_id)
        st = self.store(ident.vault_id, policy.storage)
        points = st.list_points(vm_id)
        base = max(points, key=lambda p: (p.created_at, p.point_id)) if points else None
        return f"{policy.storage}:{st.begin_session(vm_id)}", base

    def missing(self, ident: Identity, token: str, ids: list[bytes]) -> list[bytes]:
        st, sid, _ = self._session(ident, token)
        return st.missing(ids, session_id=sid)

    def upload(self, ident: Identity, token: str) -> tuple[VaultStore, str]:
        """The store and session id a PutChunks stream writes to, authorised once per call
        (a stream carries hundreds of messages; see ``VaultStore.put_chunks`` for the rest)."""
        st, sid, _ = self._session(ident, token)
        return st, sid

    def block_map(self, ident: Identity, vm_id: str, point_id: str, disk: int) -> Any:
        _, policy = self.authorise(ident, vm_id)
        st = self.store(ident.vault_id, policy.storage)
        if st.get_point(point_id).vm_id != vm_id:
            raise PermissionDenied(f"point {point_id} is not a point of VM {vm_id}")
        return st.block_map(point_id, disk)

    def commit(self, ident: Identity, token: str, vm_id: str, disks: list[DiskDelta], base: str | None,
               kind: PointKind, created_at: float, uploaded_bytes: int) -> PointInfo:
        st, sid, session_vm = self._session(ident, token)
        if session_vm != vm_id:
            raise StateConflict(f"upload session {sid} belongs to another VM")
        storage = token.partition(":")[0]
        point = st.commit_point(sid, vm_id, disks, base, kind, created_at)
        st.end_session(sid)
        now = self.clock.now()
        changed = sum(len(d.changes) for d in disks)
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO recovery_points(vault_id, vm_id, point_id, storage, created_at, kind,"
                " uploaded_bytes, changed_blocks, committed_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (ident.vault_id, vm_id, point.point_id, storage, point.created_at, point.kind, uploaded_bytes,
                 changed, now))
            conn.execute(
                "INSERT INTO replication_status(vault_id, vm_id, last_point_id, last_point_at, last_commit_at,"
                " initial_progress, last_error, updated_at) VALUES (?,?,?,?,?,1,'',?)"
                " ON CONFLICT(vault_id, vm_id) DO UPDATE SET last_point_id=excluded.last_point_id,"
                " last_point_at=MAX(last_point_at, excluded.last_point_at), last_commit_at=excluded.last_commit_at,"
                " initial_progress=1, last_error='', updated_at=excluded.updated_at",
                (ident.vault_id, vm_id, point.point_id, point.created_at, now, now))
        return point

    def report(self, ident: Identity, vm_id: str, progress: float, error: str) -> None:
        self.authorise(ident, vm_id)
        now = self.clock.now()
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO replication_status(vault_id, vm_id, initial_progress, last_error, updated_at)"
                " VALUES (?,?,?,?,?) ON CONFLICT(vault_id, vm_id) DO UPDATE SET"
                " initial_progress=MAX(initial_progress, excluded.initial_progress),"
                " last_error=excluded.last_error, updated_at=excluded.updated_at",
                (ident.vault_id, vm_id, max(0.0, min(1.0, progress)), error[:500], now))

    # ---- the operator's view -------------------------------------------------------------------
    def _item(self, vault_id: str, vm_ref: str) -> tuple[str, inventory_pb2.Policy]:
        row = self.inventory.find_vm(vault_id, vm_ref)
        item = self.protection.item(vault_id, row["vm_id"])
        if item is None:
            raise NotFound(f"VM {vm_ref!r} is not protected and has no recovery points")
        return str(row["vm_id"]), loads_policy(item["policy"])

    def points(self, vault_id: str, vm_ref: str) -> tuple[str, list[tuple[PointInfo, sqlite3.Row | None]]]:
        vm_id, policy = self._item(vault_id, vm_ref)
        st = self.store(vault_id, policy.storage)
        facts = {r["point_id"]: r for r in self.db.query(
            "SELECT * FROM recovery_points WHERE vault_id=? AND vm_id=?", (vault_id, vm_id))}
        pts = sorted(st.list_points(vm_id), key=lambda p: (p.created_at, p.point_id))
        return vm_id, [(p, facts.get(p.point_id)) for p in pts]

    def resolve(self, vault_id: str, vm_ref: str, point_id: str) -> tuple[VaultStore, PointInfo, inventory_pb2.Policy]:
        vm_id, policy = self._item(vault_id, vm_ref)
        st = self.store(vault_id, policy.storage)
        if point_id in ("", "latest"):
            pts = st.list_points(vm_id)
            if not pts:
                raise NotFound(f"VM {vm_ref!r} has no recovery point yet")
            return st, max(pts, key=lambda p: (p.created_at, p.point_id)), policy
        p = st.get_point(point_id)
        if p.vm_id != vm_id:
            raise NotFound(f"recovery point {point_id} is not a point of VM {vm_ref!r}")
        return st, p, policy

    def verify(self, vault_id: str, vm_ref: str, point_id: str) -> tuple[PointInfo, list[Damage]]:
        st, p, policy = self.resolve(vault_id, vm_ref, point_id)
        id_key = None if policy.encrypt else vault_id_key(vault_id)
        return p, st.verify(p.point_id, id_key)

    def describe(self, vault_id: str, vm_id: str, status: Any) -> None:
        row = self.db.one("SELECT * FROM replication_status WHERE vault_id=? AND vm_id=?", (vault_id, vm_id))
        if row is None or status.protection_state in ("", "Unprotected"):
            return
        now = self.clock.now()
        status.last_replication = row["last_point_at"]
        status.rpo_seconds = max(0.0, now - row["last_point_at"]) if row["last_point_at"] else 0.0
        status.initial_replication_progress = 1.0 if row["last_point_at"] else row["initial_progress"]
        h = health_of(status.policy, row["last_point_at"], row["last_error"], now)
        status.replication_health = h.state
        del status.health_errors[:]
        status.health_errors.extend(h.errors)

    # ---- retention and garbage collection ------------------------------------------------------
    def maintain(self, vault_id: str | None = None, gc: bool = True) -> tuple[int, int, int]:
        """Apply every protected VM's retention (and update its health); then collect garbage
        in the stores touched. Returns (points deleted, bytes before, bytes after)."""
        now = self.clock.now()
        where, args = ("WHERE vault_id=?", (vault_id,)) if vault_id else ("", ())
        deleted = 0
        stores: dict[tuple[str, str], VaultStore] = {}
        for item in self.db.query(f"SELECT * FROM protected_items {where}", args):
            policy = loads_policy(item["policy"])
            try:
                st = self.store(item["vault_id"], policy.storage)
            except NotFound:
                continue
            stores[(item["vault_id"], policy.storage)] = st
            pinned = {p for pin in self.pins for p in pin(item["vault_id"], item["vm_id"])}
            gone = st.apply_retention(item["vm_id"], retention_of(policy), pinned)
            deleted += len(gone)
            status = self.db.one("SELECT * FROM replication_status WHERE vault_id=? AND vm_id=?",
                                 (item["vault_id"], item["vm_id"]))
            h = health_of(policy, status["last_point_at"] if status else 0.0,
                          status["last_error"] if status else "", now)
            with self.db.write() as conn:
                for pid in gone:
                    conn.execute("DELETE FROM recovery_points WHERE vault_id=? AND point_id=?",
                                 (item["vault_id"], pid))
                if item["state"] == "Protected" and (h.state, json.dumps(h.errors)) != (
                        item["health"], item["health_errors"]):
                    conn.execute("UPDATE protected_items SET health=?, health_errors=? WHERE vault_id=? AND vm_id=?",
                                 (h.state, json.dumps(h.errors), item["vault_id"], item["vm_id"]))
        before = after = 0
        for st in stores.values():
            before += st.storage_bytes()
            if gc:
                st.gc()
            after += st.storage_bytes()
        if deleted:
            log.info("retention", extra={"fields": {"points_deleted": deleted, "bytes_before": before,
                                                    "bytes_after": after}})
        return deleted, before, after

    def start(self) -> None:
        """Run :meth:`maintain` every ``ASR_MAINTENANCE_SECONDS`` (default 60 s), with GC at most
        hourly by the injectable clock unless retention deleted points."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self.stopping.wait(MAINTENANCE_SECONDS):
                try:
                    due = self.clock.now() - self._last_gc >= GC_EVERY_SECONDS
                    deleted, _, _ = self.maintain(gc=False)
                    if deleted or due:
                        self.maintain(gc=True)
                        self._last_gc = self.clock.now()
                except Exception:  # noqa: BLE001 - keep the maintenance loop alive
                    log.exception("replication maintenance failed")

        self._thread = threading.Thread(target=loop, name="replication-maintenance", daemon=True)
        self._thread.start()
