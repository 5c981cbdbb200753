"""The cloud's side of replication: one vault store per storage account, who may write what
(authorisation and fencing), which points are committed, replication status (RPO, health,
initial progress), and retention with garbage collection.

Write ordering of a cycle (the agent drives it; see ``proto/asrpb/replication.proto``):

1. chunks are durable and indexed in the store when ``PutChunks`` returns;
2. ``CommitPoint`` writes the point's tree and row in the store (``VaultStore.commit_point``),
   then, in ONE metadata transaction, checks the session's epoch against the item's
   (``lifecycle``), writes the point's commit record (``recovery_points``) and the VM's
   status — and for a planned failover's final point advances the epoch — and only then
   answers: a point is committed, and visible, only once its record is. A session whose
   epoch went stale meanwhile is refused (Fenced) and its point deleted from the store: a
   fenced primary's data never becomes a recovery point. A crash between the store and the
   record leaves an invisible store point that the agent's retry commits, or maintenance
   removes after ``ORPHAN_GRACE_S``;
3. the agent forgets its dirty set only after the acknowledgement.

The commit transaction also meters the point for billing (``meter``, ``Billing.meter``): the
bytes uploaded for it, kept after the point itself is pruned.

Readers (export, verify) pin the point they read in the store, so retention running at the
same moment never deletes it under them (``VaultStore.pin``); failover pins its points for as
long as a recovered VM needs them (``pins``).

State lives in the metadata DB (``replication_status``, ``recovery_points``; this module is
their only writer) and in each store's index DB under
``DATA_DIR/replication/<vault>/<storage>.index.db`` (a blob account's in a schema of the PostgreSQL
database when the metadata is there: ``index_location``): nothing another process would need is
kept only in memory.

Health: with copy frequency F, a protected VM whose latest point is older than
``2F + 60 s`` is Warning and older than ``6F + 300 s`` Critical (the RPO is late); before the
first point it is Normal while the initial replication reports progress, Warning when its last
attempt failed. A VM that failed over is not replicated (Warning, no RPO) until failback; a
VM whose source is missing is Critical; a degraded cycle (a quiesce hook failed) is Warning.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from asrclock import Clock, iso
from asrerrors import AsrError, Fenced, MetadataUnavailable, NotFound, PermissionDenied, StateConflict, UsageError
from asrops.environment import seconds
from asrpb import inventory_pb2
from certs.identity import Identity
from chunkfmt import vault_id_key
from cloudsvc.events import QUIESCE_RECOVERED, Events, Severity
from cloudsvc.lifecycle import FINAL_POINT_STATES, Item, ItemState, ProtectedItems, Side
from cloudsvc.vaults import Vaults
from cloudsvc.vaultstore import (
    Damage,
    DiskDelta,
    LocalDirBackend,
    PointInfo,
    PointKind,
    RetentionPolicy,
    VaultStore,
    points_to_keep,
)
from cloudsvc.vaultstore.blobbackend import BlobBackend
from cloudsvc.vaultstore.faultybackend import faults_from_environment
from cloudsvc.vaultstore.indexdb import IndexLocation, PgIndex, StoreFigures, figures_at, pg_schema
from metastore.database import Conn, Database, Row
from metastore.postgres import PgDatabase

log = logging.getLogger(__name__)

WARNING_FACTOR, WARNING_GRACE_S = 2.0, 60.0
CRITICAL_FACTOR, CRITICAL_GRACE_S = 6.0, 300.0
MAINTENANCE_SECONDS = seconds("ASR_MAINTENANCE_SECONDS")
GC_EVERY_SECONDS = 3600.0
ORPHAN_GRACE_S = 3600.0
# the named lease (``cloudsvc.leases``) of the maintenance loop: one process runs it at a time
MAINTENANCE_LEASE = "replication.maintenance"
_HEALTH_LEVEL = {"Normal": logging.INFO, "Warning": logging.WARNING, "Critical": logging.ERROR}


class MaintenanceLeaseLost(Exception):
    """This process stalled past the maintenance lease and another one took it: stop the round
    (at a step boundary, see ``Replication.maintain``), the other process maintains now."""


# (connection, vault_id, vm_id, commit time, uploaded bytes): billing meters a committed point
Meter = Callable[[Conn, str, str, float, int], None]


@dataclass(frozen=True)
class Health:
    state: str  # Normal | Warning | Critical
    errors: list[str]


@dataclass(frozen=True)
class Session:
    store: VaultStore
    storage: str
    sid: str
    vm_id: str
    epoch: int
    final: bool


@dataclass(frozen=True)
class CycleFacts:
    """What a committed cycle adds to its VM's figures (``replication_status``)."""

    uploaded_bytes: int      # frame bytes the agent sent
    changed_blocks: int
    seconds: float           # from BeginCycle (the session opened) to the commit, by the clock
    resync: bool             # some disk was compared in full (tracking lost)


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


def item_health(item: Item, status: Row | None, now: float) -> Health:
    """Health of a protected item: its lifecycle first (failed over, source missing), then
    its replication (RPO, errors), then degraded cycles (warnings)."""
    if item.source_missing:
        return Health("Critical", [f"The source is missing: {item.source_missing}. Recovery points are kept; fail "
                                   "over, restore the VM, or disable protection (asr vm unprotect VM --force)."])
    if item.location == Side.RECOVERY:
        return Health("Warning", [f"{item.name} runs at the recovery site since {iso(item.switched_at)}; it is not "
                                  "replicated until failback (asr failover planned VM --direction to-primary)."])
    h = health_of(item.policy, status["last_point_at"] if status else 0.0, status["last_error"] if status else "",
                  now)
    if status is not None and status["warning"]:
        state = "Critical" if h.state == "Critical" else "Warning"
        return Health(state, h.errors + [f"{status['warning_code']}: {status['warning']}"])
    return h


def rpo_of(item: Item, status: Row | None, now: float) -> float | None:
    """Seconds since the latest recovery point of a VM replicating from its primary; None
    before the first point and while the recovery side is active (a failed-over VM has no RPO)."""
    if status is None or not status["last_point_at"] or item.location != Side.PRIMARY:
        return None
    return max(0.0, now - float(status["last_point_at"]))


@dataclass(frozen=True)
class VmFigures:
    """One protected item as the metrics show it (:meth:`Replication.figures`)."""

    item: Item
    health: Health
    status: Row | None   # its replication_status row (None before any report)
    points: int                  # committed recovery points
    rpo: float | None            # see rpo_of


def retention_of(policy: inventory_pb2.Policy) -> RetentionPolicy:
    return RetentionPolicy(float(policy.copy_frequency_seconds or 300), int(policy.retention_hours),
                           int(policy.app_consistent_hours))


def _token(storage: str, epoch: int, final: bool, sid: str) -> str:
    return f"{storage}:{epoch}:{'final' if final else ''}:{sid}"


class Replication:
    def __init__(self, db: Database, clock: Clock, vaults: Vaults, items: ProtectedItems, events: Events,
                 data_dir: str, stopping: threading.Event | None = None, meter: Meter | None = None) -> None:
        self.db = db
        # billing's meter (``Billing.meter``): a committed point's uploaded bytes, in its transaction
        self.meter = meter
        self.clock = clock
        self.vaults = vaults
        self.items = items
        self.events = events
        self.root = os.path.join(data_dir, "replication")
        self.stopping = stopping or threading.Event()
        # (vault, account) -> (the account's created_at, its open store)
        self._stores: dict[tuple[str, str], tuple[float, VaultStore]] = {}
        self._lock = threading.RLock()
        # with PostgreSQL, the connections every blob account's index uses (``index_location``)
        self._index_db: PgDatabase | None = None
        self._thread: threading.Thread | None = None
        self._last_gc = 0.0
        # Callables (vault_id, vm_id) -> point ids retention must keep (failover's pins).
        self.pins: list[Callable[[str, str], set[str]]] = []
        # Site to site (``replicas``, wired by the composition root): the health and RPO of a VM
        # whose points its recovery host keeps, from that host's reports.
        # ``site_health(item, status, now)`` also takes the primary's replication_status row
        self.site_health: Callable[[Item, Row | None, float], Health] | None = None
        self.site_rpo: Callable[[Item, float], float | None] | None = None
        # a re-protected VM's health: its primary's reverse syncs (``Replicas.reverse_health``)
        self.reverse_health: Callable[[Item, float], Health] | None = None
        # Whether this process may run the background maintenance now (``Leases.acquire``,
        # wired by the composition root): with several cloud service processes one runs it.
        self.lease: Callable[[str], bool] = lambda name: True

    # ---- stores -----------------------------------------------------------------------------
    def store(self, vault_id: str, storage: str) -> VaultStore:
        key = (vault_id, storage)
        # the account's row on every call (one indexed read): another cloud service process may
        # have deleted the account (and its store), or deleted it and made one of the same name
        row = self.vaults.storage(vault_id, storage)
        with self._lock:
            cached = self._stores.get(key)
            if cached is not None:
                made_at, st = cached
                if made_at == row["created_at"] and st.db.exists():
                    return st
                # this process's open copy is of a store that is gone: drop it
                del self._stores[key]
                st.close()
            if row["backend"] == "blob":
                container = f"asr-{vault_id}-{storage}".lower()[:63]
                backend: Any = BlobBackend(container, connection_string=row["connection"])
            else:
                backend = LocalDirBackend(row["location"])
            os.makedirs(os.path.join(self.root, vault_id), exist_ok=True)
            where = self.index_location(vault_id, storage, row["backend"])
            st = VaultStore(faults_from_environment(backend), where, self.clock)
            if isinstance(where, PgIndex):
                self._adopt_sqlite_index(st, self.sqlite_index_path(vault_id, storage))
            self._stores[key] = (row["created_at"], st)
            return st

    def index_location(self, vault_id: str, storage: str, backend: str) -> IndexLocation:
        """Where an account's index lives. A blob account's follows the metadata into PostgreSQL
        (one schema per account), so cloud service processes on any machine share it; otherwise,
        and for a local directory account (which one machine holds anyway), an SQLite file."""
        if backend == "blob" and isinstance(self.db, PgDatabase):
            with self._lock:
                if self._index_db is None:   # one set of connections for every account's index
                    self._index_db = PgDatabase(self.db.url, [], migrate=False, lock="asr.index")
                return PgIndex(self.db.url, pg_schema(vault_id, storage), self._index_db)
        return self.sqlite_index_path(vault_id, storage)

    def sqlite_index_path(self, vault_id: str, storage: str) -> str:
        return os.path.join(self.root, vault_id, f"{storage}.index.db")

    @staticmethod
    def _adopt_sqlite_index(st: VaultStore, path: str) -> None:
        """A blob account indexed in SQLite before its index moved to PostgreSQL (an upgrade): copy
        the file's rows in once, then set the file aside (kept, renamed, for the operator)."""
        if not os.path.exists(path):
            return
        rows = st.db.adopt(path)
        for suffix in ("-wal", "-shm", ""):   # the main file last: it is what this check looks for
            try:
                os.replace(path + suffix, path + ".moved-to-postgresql" + suffix)
            except FileNotFoundError:
                pass   # none, or another process set it aside first
        log.warning("the index of storage account %s was moved from %s into PostgreSQL (%d rows); the file "
                    "is kept as %s.moved-to-postgresql", st.db.path, path, rows, path)

    def drop_store(self, vault_id: str, storage: str) -> VaultStore | None:
        """Forget an open store (vault teardown destroys it next)."""
        with self._lock:
            cached = self._stores.pop((vault_id, storage), None)
        return cached[1] if cached else None

    def close(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for _, st in self._stores.values():
                try:
                    st.flush()
                except AsrError:
                    log.exception("flushing a vault store at shutdown failed")
                st.close()
            self._stores.clear()
            if self._index_db is not None:
                self._index_db.close()
                self._index_db = None

    # ---- authorisation and fencing ---------------------------------------------------------------
    def authorise(self, ident: Identity, vm_id: str) -> Item:
        """The protected item of ``vm_id`` when ``ident`` is the agent of the host running it."""
        item = self.items.get(ident.vault_id, vm_id)
        if item is None:
            raise PermissionDenied(f"VM {vm_id} is not protected in this agent's vault",
                                   action="Enable protection of the VM first (asr vm protect).")
        vm = self.db.one("SELECT host FROM vms WHERE vault_id=? AND vm_id=?", (ident.vault_id, vm_id))
        if vm is None or vm["host"] != ident.name:
            raise PermissionDenied(f"agent {ident.name} is not the host of VM {vm_id}",
                                   causes=("The VM moved to another host, or the agent names another VM.",))
        return item

    def _replicating(self, ident: Identity, vm_id: str, epoch: int) -> Item:
        item = self.authorise(ident, vm_id)
        try:
            self.items.check_replication(item, epoch, ident.name)
        except Fenced:
            self.items.record_fenced_attempt(item, ident.name)
            raise
        return item

    def _session(self, ident: Identity, token: str) -> Session:
        parts = token.split(":")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[3]:
            raise NotFound(f"upload session {token!r} is malformed")
        storage, epoch, flags, sid = parts[0], int(parts[1]), parts[2], parts[3]
        st = self.store(ident.vault_id, storage)
        vm_id = st.db.session_vm(sid)
        if vm_id is None:
            raise NotFound(f"upload session {sid} is not open (ended or expired)", action="Begin a new cycle.")
        self._replicating(ident, vm_id, epoch)
        return Session(st, storage, sid, vm_id, epoch, flags == "final")

    # ---- the data path -------------------------------------------------------------------------
    def begin_cycle(self, ident: Identity, vm_id: str, epoch: int, final: bool = False) -> tuple[str, PointInfo | None]:
        item = self._replicating(ident, vm_id, epoch)
        if item.site_to_site:
            raise StateConflict(
                f"VM {item.name} is replicated site to site, to host {item.recovery_host}: the vault takes no data "
                "of it", causes=("The agent does not support site-to-site replication (replica_target) and "
                                 "replicates to the vault instead.",),
                action="Upgrade the agent of the primary host to a release with site-to-site replication.")
        if final and item.state not in FINAL_POINT_STATES:
            raise StateConflict(f"VM {item.name} is {item.state}: only a planned failover or a migration takes a "
                                "final point")
        policy = item.policy
        st = self.store(ident.vault_id, policy.storage)
        points = self.visible_points(ident.vault_id, vm_id, policy.storage)
        base = points[-1] if points else None
        return _token(policy.storage, epoch, final, st.begin_session(vm_id)), base

    def missing(self, ident: Identity, token: str, ids: list[bytes]) -> list[bytes]:
        s = self._session(ident, token)
        return s.store.missing(ids, session_id=s.sid)

    def upload(self, ident: Identity, token: str) -> tuple[VaultStore, str]:
        """The store and session id a PutChunks stream writes to, authorised once per call
        (a stream carries hundreds of messages; see ``VaultStore.put_chunks`` for the rest)."""
        s = self._session(ident, token)
        return s.store, s.sid

    def block_map(self, ident: Identity, vm_id: str, point_id: str, disk: int) -> Any:
        item = self.authorise(ident, vm_id)
        st = self.store(ident.vault_id, item.policy.storage)
        if point_id not in self._committed(ident.vault_id, vm_id):
            raise NotFound(f"point {point_id} is not a committed point of VM {vm_id}")
        return st.block_map(point_id, disk)

    def commit(self, ident: Identity, token: str, vm_id: str, disks: list[DiskDelta], base: str | None,
               kind: PointKind, created_at: float, uploaded_bytes: int, resync_disks: int = 0) -> PointInfo:
        s = self._session(ident, token)
        if s.vm_id != vm_id:
            raise StateConflict(f"upload session {s.sid} belongs to another VM")
        opened_at = s.store.db.session_opened_at(s.sid)
        point = s.store.commit_point(s.sid, vm_id, disks, base, kind, created_at)
        now = self.clock.now()
        changed = sum(len(d.changes) for d in disks)
        cycle = CycleFacts(uploaded_bytes, changed, max(0.0, now - opened_at) if opened_at else 0.0, resync_disks > 0)
        try:
            with self.db.write() as conn:
                if conn.execute("SELECT 1 FROM recovery_points WHERE vault_id=? AND point_id=?",
                                (ident.vault_id, point.point_id)).fetchone() is None:
                    # serialised with every epoch change: both are metadata write transactions
                    item = self.items.get(ident.vault_id, vm_id, conn)
                    if item is None:
                        raise PermissionDenied(f"VM {vm_id} is no longer protected")
                    self.items.check_replication(item, s.epoch, ident.name)
                    self._record_point(conn, ident.vault_id, vm_id, point, s.storage, cycle, s.epoch, now)
                    if s.final:
                        self.items.final_point(conn, item, point.point_id)
        except AsrError as err:
            committed = self.db.one("SELECT 1 FROM recovery_points WHERE vault_id=? AND point_id=?",
                                    (ident.vault_id, point.point_id))
            if committed is None:
                try:
                    s.store.delete_point(point.point_id)
                except NotFound:
                    pass
            s.store.end_session(s.sid)
            if isinstance(err, Fenced):
                item = self.items.get(ident.vault_id, vm_id)
                if item is not None:
                    self.items.record_fenced_attempt(item, ident.name)
            raise
        s.store.end_session(s.sid)
        return point

    def _record_point(self, conn: Conn, vault_id: str, vm_id: str, point: PointInfo, storage: str,
                      cycle: CycleFacts, epoch: int, now: float) -> None:
        conn.execute(
            "INSERT INTO recovery_points(vault_id, vm_id, point_id, storage, created_at, kind,"
            " uploaded_bytes, changed_blocks, committed_at, epoch) VALUES (?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (vault_id, point_id) DO UPDATE SET vm_id=excluded.vm_id, storage=excluded.storage,"
            " created_at=excluded.created_at, kind=excluded.kind, uploaded_bytes=excluded.uploaded_bytes,"
            " changed_blocks=excluded.changed_blocks, committed_at=excluded.committed_at, epoch=excluded.epoch",
            (vault_id, vm_id, point.point_id, storage, point.created_at, point.kind, cycle.uploaded_bytes,
             cycle.changed_blocks, now, epoch))
        # the cycle counters (metrics) advance once per recorded point: a retried commit
        # finds its record and does not come here again
        conn.execute(
            "INSERT INTO replication_status AS rs(vault_id, vm_id, last_point_id, last_point_at, last_commit_at,"
            " initial_progress, last_error, updated_at, shipped_bytes, cycles, resyncs, last_cycle_seconds)"
            " VALUES (?,?,?,?,?,1,'',?,?,1,?,?)"
            " ON CONFLICT(vault_id, vm_id) DO UPDATE SET last_point_id=excluded.last_point_id,"
            " last_point_at=CASE WHEN rs.last_point_at > excluded.last_point_at THEN rs.last_point_at"
            " ELSE excluded.last_point_at END, last_commit_at=excluded.last_commit_at,"
            " initial_progress=1, last_error='', updated_at=excluded.updated_at,"
            " shipped_bytes=rs.shipped_bytes+excluded.shipped_bytes, cycles=rs.cycles+1,"
            " resyncs=rs.resyncs+excluded.resyncs, last_cycle_seconds=excluded.last_cycle_seconds",
            (vault_id, vm_id, point.point_id, point.created_at, now, now, cycle.uploaded_bytes, int(cycle.resync),
             cycle.seconds))
        if self.meter is not None:
            self.meter(conn, vault_id, vm_id, now, cycle.uploaded_bytes)

    def report(self, ident: Identity, vm_id: str, epoch: int, progress: float, error: str, warning: str = "",
               warning_code: str = "") -> None:
        item = self.authorise(ident, vm_id)
        if item.location != Side.PRIMARY or epoch != item.epoch:
            self.items.record_fenced_attempt(item, ident.name)
            raise self.items.fenced(item, epoch, ident.name)
        now = self.clock.now()
        with self.db.write() as conn:
            old = conn.execute("SELECT warning FROM replication_status WHERE vault_id=? AND vm_id=?",
                               (ident.vault_id, vm_id)).fetchone()
            before = old["warning"] if old else ""
            conn.execute(
                "INSERT INTO replication_status AS rs(vault_id, vm_id, initial_progress, last_error, updated_at,"
                " warning, warning_code, warning_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(vault_id, vm_id) DO UPDATE"
                " SET initial_progress=CASE WHEN rs.initial_progress > excluded.initial_progress"
                " THEN rs.initial_progress ELSE excluded.initial_progress END,"
                " last_error=excluded.last_error, updated_at=excluded.updated_at, warning=excluded.warning,"
                " warning_code=excluded.warning_code, warning_at=excluded.warning_at",
                (ident.vault_id, vm_id, max(0.0, min(1.0, progress)), error[:500], now, warning[:1000],
                 warning_code if warning else "", now if warning else 0.0))
            if warning and warning != before:
                self.events.record(conn, ident.vault_id, Severity.WARNING, warning_code or "ASR-0045",
                                   f"{item.name}: {warning}", vm_id=vm_id, vm_name=item.name,
                                   server=f"agent/{ident.name}")
            elif before and not warning and not error:
                self.events.record(conn, ident.vault_id, Severity.INFO, QUIESCE_RECOVERED,
                                   f"{item.name}: the degraded condition cleared ({before[:200]})", vm_id=vm_id,
                                   vm_name=item.name, server=f"agent/{ident.name}")

    def check_epoch(self, ident: Identity, vm_id: str, epoch: int) -> Item:
        """The item, if the agent's epoch is current and the primary is the active side."""
        item = self.authorise(ident, vm_id)
        if item.location != Side.PRIMARY or epoch != item.epoch:
            self.items.record_fenced_attempt(item, ident.name)
            raise self.items.fenced(item, epoch, ident.name)
        return item

    # ---- committed points ------------------------------------------------------------------------
    def _committed(self, vault_id: str, vm_id: str) -> dict[str, Row]:
        return {r["point_id"]: r for r in self.db.query(
            "SELECT * FROM recovery_points WHERE vault_id=? AND vm_id=?", (vault_id, vm_id))}

    def visible_points(self, vault_id: str, vm_id: str, storage: str) -> list[PointInfo]:
        """The VM's committed points that its store holds, oldest first."""
        committed = self._committed(vault_id, vm_id)
        st = self.store(vault_id, storage)
        return sorted((p for p in st.list_points(vm_id) if p.point_id in committed),
                      key=lambda p: (p.created_at, p.point_id))

    def choose_point(self, vault_id: str, vm_id: str, storage: str, spec: str, name: str) -> tuple[VaultStore,
                                                                                                    PointInfo]:
        """A committed point of the VM: ``latest``, ``latest-app-consistent`` or an id."""
        st = self.store(vault_id, storage)
        pts = self.visible_points(vault_id, vm_id, storage)
        if spec in ("", "latest", "latest-app-consistent"):
            pts = [p for p in pts if spec != "latest-app-consistent" or p.kind == "app"]
            if not pts:
                raise NotFound(f"VM {name} has no {'app-consistent ' if spec.endswith('consistent') else ''}"
                               "recovery point yet", action="Wait for replication (asr point list VM).")
            return st, pts[-1]
        for p in pts:
            if p.point_id == spec:
                return st, p
        raise NotFound(f"recovery point {spec!r} is not a point of VM {name}",
                       causes=("The id is mistyped, belongs to another VM, or retention deleted the point.",),
                       action=f"List the points with 'asr point list {name}'.")

    # ---- the operator's view -------------------------------------------------------------------
    def _item(self, vault_id: str, vm_id: str, name: str) -> Item:
        item = self.items.get(vault_id, vm_id)
        if item is None:
            raise NotFound(f"VM {name!r} is not protected and has no recovery points")
        if item.site_to_site:
            raise StateConflict(f"the recovery points of VM {name!r} are kept on its recovery host "
                                f"{item.recovery_host}, not in the vault (site to site)",
                                action=f"List them with 'asr point list {name}'; the vault holds no data of them.")
        return item

    def health(self, item: Item, status: Row | None, now: float) -> Health:
        """:func:`item_health`, or for a site-to-site VM its lifecycle and then its replica's."""
        if item.site_to_site and self.site_health is not None:
            base = item_health(item, None, now)
            if item.state == ItemState.REVERSE_PROTECTED and self.reverse_health is not None:
                return self.reverse_health(item, now)
            if item.source_missing or item.location == Side.RECOVERY:
                return base
            return self.site_health(item, status, now)
        return item_health(item, status, now)

    def rpo(self, item: Item, status: Row | None, now: float) -> float | None:
        if item.site_to_site and self.site_rpo is not None:
            return self.site_rpo(item, now) if item.location == Side.PRIMARY else None
        return rpo_of(item, status, now)

    def points(self, vault_id: str, vm_id: str, name: str) -> list[tuple[PointInfo, Row]]:
        item = self._item(vault_id, vm_id, name)
        committed = self._committed(vault_id, vm_id)
        return [(p, committed[p.point_id]) for p in self.visible_points(vault_id, vm_id, item.policy.storage)]

    def read_point(self, vault_id: str, vm_id: str, name: str, point_id: str, disk_index: int
                   ) -> tuple[PointInfo, bool, Iterator[tuple[int, bytes, bytes | None]]]:
        """(point, encrypted, frames) for an export: frames as ``VaultStore.read_frames``
        yields them, (block, chunk id, frame or None). The point is pinned from before it is
        resolved until the frames are exhausted or closed: retention cannot delete it under
        a running export."""
        item = self._item(vault_id, vm_id, name)
        st, point = self.choose_point(vault_id, vm_id, item.policy.storage, point_id, name)
        if not 0 <= disk_index < len(point.disks):
            raise UsageError(f"point {point.point_id} has no disk {disk_index} (it has {len(point.disks)})",
                             action="Disks are counted from 0.")
        pin = st.pin(point.point_id, holder=f"export {name} disk {disk_index}")
        pin.__enter__()

        def frames() -> Iterator[tuple[int, bytes, bytes | None]]:
            try:
                yield from st.read_frames(point.point_id, disk_index)
            finally:
                pin.__exit__(None, None, None)

        return point, item.policy.encrypt, frames()

    def verify(self, vault_id: str, vm_id: str, name: str, point_id: str) -> tuple[PointInfo, list[Damage], int]:
        item = self._item(vault_id, vm_id, name)
        st, p = self.choose_point(vault_id, vm_id, item.policy.storage, point_id, name)
        id_key = None if item.policy.encrypt else vault_id_key(vault_id)
        with st.pin(p.point_id, holder=f"verify {name}"):
            result = st.verify(p.point_id, id_key)
        return p, list(result.damage), int(result.packs_checked)

    def rebuild_index(self, vault_id: str, storage: str) -> tuple[int, int, list[str]]:
        """Rebuild a storage account's chunk index from its pack trailers (operator command)."""
        self.vaults.storage(vault_id, storage)
        res = self.store(vault_id, storage).rebuild_index()
        return int(res.packs), int(res.blobs), list(res.damaged_packs)

    def describe(self, vault_id: str, item: Item, status: Any) -> None:
        """Fill RPO, last replication, initial progress and health of ``status`` (a VmStatus)."""
        row = self.db.one("SELECT * FROM replication_status WHERE vault_id=? AND vm_id=?", (vault_id, item.vm_id))
        now = self.clock.now()
        h = self.health(item, row, now)
        status.replication_health = h.state
        del status.health_errors[:]
        status.health_errors.extend(h.errors)
        if item.site_to_site:
            status.rpo_seconds = self.rpo(item, row, now) or 0.0
            return
        if row is None:
            return
        status.last_replication = row["last_point_at"]
        if item.location == Side.PRIMARY:
            status.rpo_seconds = rpo_of(item, row, now) or 0.0
        status.initial_replication_progress = 1.0 if row["last_point_at"] else row["initial_progress"]

    def figures(self, vault_id: str | None = None) -> list[VmFigures]:
        """Every protected item (of one vault, or all) with its replication status, health and
        number of recovery points now: what the metrics show, read at scrape time."""
        now = self.clock.now()
        where, args = ("WHERE vault_id=?", (vault_id,)) if vault_id else ("", ())
        status = {(r["vault_id"], r["vm_id"]): r for r in self.db.query(
            f"SELECT * FROM replication_status {where}", args)}
        counts = {(r["vault_id"], r["vm_id"]): int(r["n"]) for r in self.db.query(
            f"SELECT vault_id, vm_id, COUNT(*) AS n FROM recovery_points {where} GROUP BY vault_id, vm_id", args)}
        out = []
        for item in self.items.all(vault_id):
            row = status.get((item.vault_id, item.vm_id))
            out.append(VmFigures(item, self.health(item, row, now), row, counts.get((item.vault_id, item.vm_id), 0),
                                 self.rpo(item, row, now)))
        return out

    def point_times(self, vault_id: str, since: float) -> dict[str, list[float]]:
        """Each VM's committed point times from ``since`` on, oldest first, plus its last point
        before ``since`` (the portal's RPO chart: what the RPO was at any time of the span).
        One row per VM (``Database.group_concat``): 2,000 VMs with a day of points are 72,000 points, and
        fetching each as a row cost most of a second."""
        out: dict[str, list[float]] = {}
        for r in self.db.query(
                "SELECT vm_id, MAX(created_at) AS at FROM recovery_points WHERE vault_id=? AND created_at<? "
                "GROUP BY vm_id", (vault_id, since)):
            out[r["vm_id"]] = [float(r["at"])]
        for r in self.db.query(f"SELECT vm_id, {self.db.group_concat('created_at')} AS times FROM recovery_points "
                               "WHERE vault_id=? AND created_at>=? GROUP BY vm_id", (vault_id, since)):
            out.setdefault(r["vm_id"], []).extend(sorted(float(t) for t in str(r["times"]).split(",")))
        return out

    def storage_figures(self) -> list[tuple[str, str, StoreFigures]]:
        """(vault id, storage account, its figures) of every storage account that holds
        replicated data (its store's index exists): pack bytes, as ``VaultStore.storage_bytes``,
        and open upload sessions. A store not open in this process is read without opening it
        (``figures_at``)."""
        out = []
        for vid, storage, backend in self.db.query("SELECT vault_id, name, backend FROM storage_accounts"):
            with self._lock:
                cached = self._stores.get((vid, storage))
            figures = cached[1].db.figures() if cached else figures_at(self.index_location(vid, storage, backend))
            if figures is not None:
                out.append((vid, storage, figures))
        return out

    # ---- retention and garbage collection ------------------------------------------------------
    def maintain(self, vault_id: str | None = None, gc: bool = True,
                 checkpoint: Callable[[], None] = lambda: None) -> tuple[int, int, int]:
        """Apply every protected VM's retention, remove the points of VMs no longer protected
        (unless a recovered VM still needs them) and orphaned store points; then collect
        garbage in the stores touched. Returns (points deleted, bytes before, bytes after).
        ``checkpoint`` runs between the steps (each VM's retention, each store's sweep and, inside
        each collection, between its own steps): the background round renews its lease there
        (:meth:`maintenance_round`); it may raise to stop, each step being complete by itself."""
        now = self.clock.now()
        deleted = 0
        stores: dict[tuple[str, str], VaultStore] = {}
        items = self.items.all(vault_id)
        protected = {(i.vault_id, i.vm_id) for i in items}
        for item in items:
            checkpoint()
            policy = item.policy
            try:
                st = self.store(item.vault_id, policy.storage)
            except NotFound:
                continue
            stores[(item.vault_id, policy.storage)] = st
            pinned = self._pinned(item.vault_id, item.vm_id)
            visible = self.visible_points(item.vault_id, item.vm_id, policy.storage)
            keep = points_to_keep(visible, retention_of(policy), now) | pinned
            gone = st.apply_retention(item.vm_id, retention_of(policy), keep)
            deleted += self._forget(item.vault_id, gone)
        for (vid, storage) in self._storages(vault_id):
            checkpoint()
            try:
                st = self.store(vid, storage)
            except NotFound:
                continue
            stores[(vid, storage)] = st
            deleted += self._sweep(vid, st, protected, now)
        before = after = 0
        for st in stores.values():
            before += st.storage_bytes()
            if gc:
                checkpoint()
                stats = st.gc(checkpoint)
                if stats.sessions_expired or stats.packs_deleted:
                    log.info("collection", extra={"fields": {
                        "packs_deleted": stats.packs_deleted, "packs_written": stats.packs_written,
                        "sessions_expired": stats.sessions_expired,
                        # sealed after the oldest open upload session began: examined once it ends
                        "packs_kept_by_age": stats.packs_kept_by_age}})
            after += st.storage_bytes()
        if deleted:
            log.info("retention", extra={"fields": {"points_deleted": deleted, "bytes_before": before,
                                                    "bytes_after": after}})
        return deleted, before, after

    def watch_health(self, vault_id: str | None = None) -> int:
        """Compare every protected item's health (computed at read time, :func:`item_health`)
        with the health seen last (``Events.health_seen``, kept in the metadata DB, so a
        restart or another process does not report it again): each change becomes one event
        and one log line, to Critical at ERROR, to Warning at WARNING, back to Normal at INFO.
        Returns the number of changes."""
        now = self.clock.now()
        items = self.items.all(vault_id)
        rows = self.db.query("SELECT * FROM replication_status" + (" WHERE vault_id=?" if vault_id else ""),
                             (vault_id,) if vault_id else ())
        status = {(r["vault_id"], r["vm_id"]): r for r in rows}
        changes = []
        with self.db.write() as conn:
            for item in items:
                h = self.health(item, status.get((item.vault_id, item.vm_id)), now)
                before = self.events.health_seen(conn, item.vault_id, item.vm_id, item.name, h.state, h.errors)
                if before:
                    changes.append((item, h, before))
            if vault_id is None:
                self.events.forget_health(conn, {(i.vault_id, i.vm_id) for i in items})
        for item, h, before in changes:   # logged once the change is committed
            reason = h.errors[0] if h.errors else ""
            log.log(_HEALTH_LEVEL.get(h.state, logging.WARNING),
                    f"{item.name}: replication health {h.state} (was {before})" + (f": {reason}" if reason else ""),
                    extra={"fields": {"vault_id": item.vault_id, "vm": item.name, "vm_id": item.vm_id,
                                      "health": h.state, "was": before, "protection_state": item.state.value}})
        return len(changes)

    def _pinned(self, vault_id: str, vm_id: str) -> set[str]:
        return {p for pin in self.pins for p in pin(vault_id, vm_id)}

    def _storages(self, vault_id: str | None) -> list[tuple[str, str]]:
        if vault_id:
            return [(vault_id, r["name"]) for r in self.vaults.list_storage(vault_id)]
        return [(r["vault_id"], r["name"]) for r in self.db.query("SELECT vault_id, name FROM storage_accounts")]

    def _sweep(self, vault_id: str, st: VaultStore, protected: set[tuple[str, str]], now: float) -> int:
        """Delete store points that are no recovery point: of VMs whose protection was
        disabled (unless a recovered VM still pins them), and orphans whose commit never got
        its record (past the grace a retried commit would need)."""
        committed = {r["point_id"] for r in self.db.query("SELECT point_id FROM recovery_points WHERE vault_id=?",
                                                          (vault_id,))}
        doomed = []
        since: dict[str, float] = {}
        for p in st.db.points():
            if (vault_id, p.vm_id) not in protected:
                if p.point_id not in self._pinned(vault_id, p.vm_id):
                    doomed.append(p.point_id)
            elif p.point_id not in committed:
                if p.vm_id not in since:
                    since[p.vm_id] = self._protected_since(vault_id, p.vm_id)
                if now - p.created_at > ORPHAN_GRACE_S or p.created_at < since[p.vm_id]:
                    doomed.append(p.point_id)   # an orphan, or a point of an earlier protection
        gone = []
        for pid in doomed:
            try:
                st.delete_point(pid)
                gone.append(pid)
            except (NotFound, StateConflict):  # pinned by a reader meanwhile, or already gone
                continue
        # records of points the store no longer holds (a crash between the two deletes)
        held = {p.point_id for p in st.db.points()}
        stale = [pid for pid in committed if pid not in held and self._storage_of(vault_id, pid) == st]
        return self._forget(vault_id, gone + stale)

    def _protected_since(self, vault_id: str, vm_id: str) -> float:
        item = self.items.get(vault_id, vm_id)
        return item.created_at if item else 0.0

    def _storage_of(self, vault_id: str, point_id: str) -> VaultStore | None:
        row = self.db.one("SELECT storage FROM recovery_points WHERE vault_id=? AND point_id=?", (vault_id, point_id))
        return self.store(vault_id, row["storage"]) if row else None

    def _forget(self, vault_id: str, point_ids: list[str]) -> int:
        if not point_ids:
            return 0
        with self.db.write() as conn:
            for pid in point_ids:
                conn.execute("DELETE FROM recovery_points WHERE vault_id=? AND point_id=?", (vault_id, pid))
        return len(point_ids)

    def forget_vm(self, conn: Conn, vault_id: str, vm_id: str) -> None:
        """Protection of a VM ended (lifecycle's ``on_removed``, in that transaction): its points
        are no recovery points any more (they are not shown, nor used as the base of a later
        protection's first cycle) and maintenance deletes their data once nothing pins them."""
        conn.execute("DELETE FROM recovery_points WHERE vault_id=? AND vm_id=?", (vault_id, vm_id))
        conn.execute("DELETE FROM replication_status WHERE vault_id=? AND vm_id=?", (vault_id, vm_id))

    def start(self) -> None:
        """Run :meth:`maintain` every ``ASR_MAINTENANCE_SECONDS`` (default 60 s), with GC and
        the event history's trimming at most hourly by the injectable clock unless retention
        deleted points. Health changes are watched more often (``cloudsvc.healthwatch``)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self.stopping.wait(MAINTENANCE_SECONDS):
                try:
                    self.maintenance_round()
                except MaintenanceLeaseLost:
                    log.warning("replication maintenance stopped: another cloud service process took "
                                "its lease over (this one stalled past it)")
                except MetadataUnavailable as err:   # PostgreSQL away: the next round tries again
                    log.warning("replication maintenance waits for the metadata store: %s", err)
                except Exception:  # noqa: BLE001 - keep the maintenance loop alive
                    log.exception("replication maintenance failed")

        self._thread = threading.Thread(target=loop, name="replication-maintenance", daemon=True)
        self._thread.start()

    def maintenance_round(self) -> bool:
        """One round of the background maintenance, if this process holds the maintenance lease
        (or takes it); whether it ran. The lease is renewed while the work goes on, at every step
        of :meth:`maintain`, not only as the round starts: a collection that outlasts the lease
        would otherwise let another process start maintenance meanwhile. A process that dies
        renews nothing more, and its lease expires after one period."""
        if not self.lease(MAINTENANCE_LEASE):
            return False   # another cloud service process maintains the vaults
        due = self.clock.now() - self._last_gc >= GC_EVERY_SECONDS
        deleted, _, _ = self.maintain(gc=False, checkpoint=self._keep_lease)
        if deleted or due:
            self.maintain(gc=True, checkpoint=self._keep_lease)
            self.events.trim()
            self._last_gc = self.clock.now()
        return True

    def _keep_lease(self) -> None:
        # cheap at every step: ``Leases.acquire`` reads, and writes only once half the period is gone
        if not self.lease(MAINTENANCE_LEASE):
            raise MaintenanceLeaseLost(MAINTENANCE_LEASE)


__all__ = ["CycleFacts", "ItemState", "MaintenanceLeaseLost", "Replication", "VmFigures", "health_of", "item_health",
           "rpo_of"]
