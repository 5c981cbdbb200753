"""Protected items: one state machine, and the only writer of the ``protected_items`` table.

Every operation an operator (or the VMM console, or a job) runs on a protected item asks
this module first; a refused operation names the operations allowed in the item's state.
States, the operations allowed in each, and what every operation does to the item are the
one table :data:`TRANSITIONS` below — the allowed operations are derived from it.

::

    (none) ──protect──▶ EnablingProtection ──▶ Protected ──unprotect──▶ DisablingProtection ──▶ (none)
    Protected ──test-failover──▶ TestFailoverInProgress ──▶ TestFailoverCleanupPending
    TestFailoverCleanupPending ──test-complete──▶ TestFailoverCleanupInProgress ──▶ Protected
    Protected ──planned-failover──▶ PlannedFailoverInProgress ─(final point: epoch+1)─▶ FailoverCommitPending
    Protected | TestFailoverCleanupPending | SourceMissing
              ──unplanned-failover (epoch+1)──▶ UnplannedFailoverInProgress ──▶ FailoverCommitPending
    FailoverCommitPending ──commit──▶ CommitInProgress ──▶ FailoverCommitted
    FailoverCommitPending ──cancel (epoch+1)──▶ CancelInProgress ──▶ Protected
    FailoverCommitPending ──change-point──▶ ChangePointInProgress ──▶ FailoverCommitPending
    FailoverCommitted ──failback (epoch+1)──▶ FailbackInProgress ──▶ FailbackCommitPending
    FailbackCommitPending ──commit──▶ CommitInProgress ──▶ Protected
    FailoverCommitted ──reprotect (site to site)──▶ ReprotectInProgress ──▶ ReverseProtected
    ReverseProtected ──failback (epoch+1; only the last delta)──▶ FailbackInProgress
    Protected ──migrate──▶ MigrationInProgress ─(final point: epoch+1)─▶ (none)
    Protected ──(VM gone from its provider)──▶ SourceMissing ──(reported again)──▶ Protected
    any resting state, or one held by a stuck protection job ──unprotect --force──▶ DisablingProtection

A job that fails puts the item back in the state it started from.

**One active side.** An item is active on its *primary* (the on-premises VM) or on the
*recovery* side (a VM the vault materialised). The epoch advances at every change of the
active side: when an unplanned failover starts (the primary is presumed lost from that
moment, so nothing it writes later can become a point), when a planned failover's final
point commits, when a cancel or a failback gives the primary back, and when a failed job
puts the other side back. Replication sessions and site commands carry the epoch; the
primary may ship points only while it is the active side, holds the current epoch, and the
state lets it (:attr:`StateInfo.replicates`). The primary learns a new epoch only from a
command that grants it (EnableReplication, Failback); see ``docs/design.md``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from asrclock import Clock
from asrerrors import Fenced, NotFound, SourceMissing, StateConflict
from asrpb import inventory_pb2
from chunkfmt import DEFAULT_COMPRESSION
from cloudsvc.events import EPOCH_ADVANCED, SOURCE_RETURNED, STATE_CHANGED, Events, Severity
from metastore.database import Conn, Database, Row


class ItemState(StrEnum):
    UNPROTECTED = "Unprotected"           # no row: not a state the table stores
    ENABLING = "EnablingProtection"
    PROTECTED = "Protected"
    SOURCE_MISSING = "SourceMissing"
    DISABLING = "DisablingProtection"
    TEST_FAILOVER = "TestFailoverInProgress"
    TEST_CLEANUP_PENDING = "TestFailoverCleanupPending"
    TEST_CLEANUP = "TestFailoverCleanupInProgress"
    PLANNED_FAILOVER = "PlannedFailoverInProgress"
    UNPLANNED_FAILOVER = "UnplannedFailoverInProgress"
    COMMIT_PENDING = "FailoverCommitPending"
    COMMITTING = "CommitInProgress"
    COMMITTED = "FailoverCommitted"
    CANCELLING = "CancelInProgress"
    CHANGING_POINT = "ChangePointInProgress"
    FAILBACK = "FailbackInProgress"
    FAILBACK_COMMIT_PENDING = "FailbackCommitPending"
    MIGRATING = "MigrationInProgress"
    REPROTECTING = "ReprotectInProgress"
    REVERSE_PROTECTED = "ReverseProtected"    # site to site: the primary's copy follows the failover VM


class Side(StrEnum):
    PRIMARY = "Primary"
    RECOVERY = "Recovery"


class Op(StrEnum):
    PROTECT = "protect"
    UNPROTECT = "unprotect"
    FORCE_UNPROTECT = "unprotect-force"
    TEST_FAILOVER = "test-failover"
    TEST_COMPLETE = "test-complete"
    PLANNED_FAILOVER = "planned-failover"
    UNPLANNED_FAILOVER = "unplanned-failover"
    COMMIT = "commit"
    CANCEL = "cancel"
    CHANGE_POINT = "change-point"
    FAILBACK = "failback"
    MIGRATE = "migrate"
    REPROTECT = "reprotect"


@dataclass(frozen=True)
class StateInfo:
    home: Side | None       # the active side of an item resting here; None: kept from before (a job holds it)
    replicates: bool        # the primary may ship points here (when it is active and holds the epoch)
    resting: bool           # no job holds the item


S = ItemState
STATES: dict[ItemState, StateInfo] = {
    S.ENABLING: StateInfo(Side.PRIMARY, True, False),
    S.PROTECTED: StateInfo(Side.PRIMARY, True, True),
    S.SOURCE_MISSING: StateInfo(Side.PRIMARY, False, True),
    S.DISABLING: StateInfo(None, False, False),
    S.TEST_FAILOVER: StateInfo(Side.PRIMARY, True, False),
    S.TEST_CLEANUP_PENDING: StateInfo(Side.PRIMARY, True, True),
    S.TEST_CLEANUP: StateInfo(Side.PRIMARY, True, False),
    S.PLANNED_FAILOVER: StateInfo(None, True, False),      # until its final point moves the active side
    S.UNPLANNED_FAILOVER: StateInfo(Side.RECOVERY, False, False),
    S.COMMIT_PENDING: StateInfo(Side.RECOVERY, False, True),
    S.COMMITTING: StateInfo(None, True, False),            # failback's commit keeps the primary replicating
    S.COMMITTED: StateInfo(Side.RECOVERY, False, True),
    S.CANCELLING: StateInfo(Side.PRIMARY, True, False),
    S.CHANGING_POINT: StateInfo(Side.RECOVERY, False, False),
    S.FAILBACK: StateInfo(Side.PRIMARY, False, False),     # no point while blocks are being written back
    S.FAILBACK_COMMIT_PENDING: StateInfo(Side.PRIMARY, True, True),
    S.MIGRATING: StateInfo(None, True, False),
    S.REPROTECTING: StateInfo(Side.RECOVERY, False, False),
    S.REVERSE_PROTECTED: StateInfo(Side.RECOVERY, False, True),
}


@dataclass(frozen=True)
class Transition:
    op: Op
    sources: frozenset[ItemState]
    during: ItemState
    done: ItemState | None          # None: protection is removed (the row is deleted)
    switch: Side | None = None      # the active side moves here when the operation starts (epoch + 1)
    only: str = ""                  # "site": VMs protected site to site only; "vault": to the vault only


def _t(op: Op, sources: set[ItemState], during: ItemState, done: ItemState | None,
       switch: Side | None = None, only: str = "") -> Transition:
    return Transition(op, frozenset(sources), during, done, switch, only)


# Every operation, the states it may start from, the state while its job runs and after it
# succeeded. A failed job goes back to the state it started from (and to that state's side).
TRANSITIONS: tuple[Transition, ...] = (
    _t(Op.PROTECT, {S.UNPROTECTED}, S.ENABLING, S.PROTECTED),
    _t(Op.UNPROTECT, {S.PROTECTED, S.COMMITTED, S.REVERSE_PROTECTED}, S.DISABLING, None),
    _t(Op.FORCE_UNPROTECT, {S.PROTECTED, S.SOURCE_MISSING, S.ENABLING, S.DISABLING, S.COMMITTED,
                            S.TEST_CLEANUP_PENDING, S.REPROTECTING, S.REVERSE_PROTECTED}, S.DISABLING, None),
    _t(Op.TEST_FAILOVER, {S.PROTECTED}, S.TEST_FAILOVER, S.TEST_CLEANUP_PENDING),
    _t(Op.TEST_COMPLETE, {S.TEST_CLEANUP_PENDING}, S.TEST_CLEANUP, S.PROTECTED),
    _t(Op.PLANNED_FAILOVER, {S.PROTECTED}, S.PLANNED_FAILOVER, S.COMMIT_PENDING),
    _t(Op.UNPLANNED_FAILOVER, {S.PROTECTED, S.TEST_CLEANUP_PENDING, S.SOURCE_MISSING}, S.UNPLANNED_FAILOVER,
       S.COMMIT_PENDING, switch=Side.RECOVERY),
    _t(Op.COMMIT, {S.COMMIT_PENDING}, S.COMMITTING, S.COMMITTED),
    _t(Op.COMMIT, {S.FAILBACK_COMMIT_PENDING}, S.COMMITTING, S.PROTECTED),
    _t(Op.CANCEL, {S.COMMIT_PENDING}, S.CANCELLING, S.PROTECTED, switch=Side.PRIMARY),
    _t(Op.CHANGE_POINT, {S.COMMIT_PENDING}, S.CHANGING_POINT, S.COMMIT_PENDING),
    _t(Op.REPROTECT, {S.COMMITTED}, S.REPROTECTING, S.REVERSE_PROTECTED, only="site"),
    _t(Op.FAILBACK, {S.COMMITTED, S.REVERSE_PROTECTED}, S.FAILBACK, S.FAILBACK_COMMIT_PENDING,
       switch=Side.PRIMARY),
    _t(Op.MIGRATE, {S.PROTECTED}, S.MIGRATING, None, only="vault"),
)
# Operations an operator sees in `asr vm show` (forced unprotect is shown as unprotect --force).
FINAL_POINT_STATES = frozenset({S.PLANNED_FAILOVER, S.MIGRATING})


def transition(op: Op, source: ItemState) -> Transition | None:
    for t in TRANSITIONS:
        if t.op == op and source in t.sources:
            return t
    return None


def allowed(state: ItemState, site_to_site: bool | None = None) -> list[str]:
    """The operations allowed in ``state``, in table order, each once; for an item protected
    site to site (True) or to the vault (False), without those only the other kind has."""
    skip = {True: "vault", False: "site", None: "-"}[site_to_site]
    out: list[str] = []
    for t in TRANSITIONS:
        if state in t.sources and t.op.value not in out and t.only != skip:
            out.append(t.op.value)
    return out


@dataclass(frozen=True)
class Item:
    vault_id: str
    vm_id: str
    name: str
    cloud: str
    provider: str
    state: ItemState
    policy_json: str
    epoch: int
    location: Side
    op: str
    prev_state: str
    job_id: str
    switched_at: float
    fenced_attempt_at: float
    fenced_attempt_from: str
    source_missing: str
    created_at: float
    updated_at: float
    # Site to site (issue 11): the recovery cloud and host the VM is replicated to, and the
    # pairing both hosts check; "" for a VM replicated to the vault.
    recovery_cloud: str = ""
    recovery_host: str = ""
    pairing_id: str = ""

    @property
    def site_to_site(self) -> bool:
        return bool(self.recovery_host)

    @property
    def allowed(self) -> list[str]:
        return allowed(self.state, self.site_to_site)

    @property
    def policy(self) -> inventory_pb2.Policy:
        """A new message each time (callers may change it); the JSON is parsed once per text:
        ParseDict cost ~0.2 ms, which a vault of 2,000 VMs paid on every health figure."""
        p = inventory_pb2.Policy()
        p.ParseFromString(_policy_bytes(self.policy_json))
        return p

    @property
    def replicating(self) -> bool:
        """The primary may ship points now (with the current epoch)."""
        return self.location == Side.PRIMARY and STATES[self.state].replicates


@functools.lru_cache(maxsize=256)
def _policy_bytes(text: str) -> bytes:
    from google.protobuf.json_format import ParseDict

    p = ParseDict(json.loads(text), inventory_pb2.Policy())
    p.compression = p.compression or DEFAULT_COMPRESSION  # an item protected before policies had one
    return p.SerializeToString()


def _item(r: Row) -> Item:
    return Item(r["vault_id"], r["vm_id"], r["name"], r["cloud"], r["provider"], ItemState(r["state"]),
                r["policy"], int(r["epoch"]), Side(r["active_location"]), r["op"], r["prev_state"], r["job_id"],
                float(r["switched_at"]), float(r["fenced_attempt_at"]), r["fenced_attempt_from"],
                r["source_missing"], float(r["created_at"]), float(r["updated_at"]), r["recovery_cloud"],
                r["recovery_host"], r["pairing_id"])


@dataclass(frozen=True)
class Outcome:
    """What a job's end did to an item: ``grant`` says the primary became the active side
    with a new epoch that it has not been given yet (the caller sends EnableReplication)."""

    item: Item | None
    grant: bool = False


def refusal(name: str, op: str, state: ItemState, details: list[str] | None = None,
            site_to_site: bool | None = None) -> StateConflict:
    ops = allowed(state, site_to_site)
    return StateConflict(
        f"{op} is not allowed for VM {name!r} in state {state}",
        causes=(f"Allowed now: {', '.join(ops) or 'none (an operation is in progress)'}.",),
        details=details or (),
    )


class ProtectedItems:
    def __init__(self, db: Database, clock: Clock, events: Events) -> None:
        self.db = db
        self.clock = clock
        self.events = events
        # Called (conn, vault_id, vm_id) in the transaction that removes an item: what belongs
        # to a protection goes with it (its points' records; the composition root wires this).
        self.on_removed: list[Callable[[Conn, str, str], None]] = []

    def _remove(self, conn: Conn, vault_id: str, vm_id: str) -> None:
        conn.execute("DELETE FROM protected_items WHERE vault_id=? AND vm_id=?", (vault_id, vm_id))
        for fn in self.on_removed:
            fn(conn, vault_id, vm_id)

    # ---- reading ----------------------------------------------------------------------------
    def get(self, vault_id: str, vm_id: str, conn: Conn | None = None) -> Item | None:
        sql, args = "SELECT * FROM protected_items WHERE vault_id=? AND vm_id=?", (vault_id, vm_id)
        row = conn.execute(sql, args).fetchone() if conn is not None else self.db.one(sql, args)
        return _item(row) if row is not None else None

    def state(self, vault_id: str, vm_id: str) -> ItemState:
        item = self.get(vault_id, vm_id)
        return item.state if item else S.UNPROTECTED

    def all(self, vault_id: str | None = None) -> list[Item]:
        if vault_id is None:
            return [_item(r) for r in self.db.query("SELECT * FROM protected_items ORDER BY vault_id, name")]
        return [_item(r) for r in self.db.query("SELECT * FROM protected_items WHERE vault_id=? ORDER BY name",
                                                (vault_id,))]

    def list_in(self, conn: Conn, vault_id: str) -> list[Item]:
        return [_item(r) for r in conn.execute("SELECT * FROM protected_items WHERE vault_id=? ORDER BY name",
                                               (vault_id,)).fetchall()]

    def require(self, vault_id: str, vm_id: str, name: str, op: Op) -> ItemState:
        """The item's state, if ``op`` may start from it; else a StateConflict naming the allowed ones."""
        state = self.state(vault_id, vm_id)
        if transition(op, state) is None:
            raise refusal(name, op.value, state)
        return state

    # ---- operations ---------------------------------------------------------------------------
    def create(self, conn: Conn, vault_id: str, *, vm_id: str, name: str, cloud: str, provider: str,
               policy_json: str, job_id: str, recovery_cloud: str = "", recovery_host: str = "",
               pairing_id: str = "") -> Item:
        """protect: a new item in EnablingProtection at epoch 1, the primary active; site to
        site, paired with ``recovery_host`` of ``recovery_cloud`` under ``pairing_id``."""
        if self.get(vault_id, vm_id, conn) is not None:
            raise refusal(name, Op.PROTECT.value, self.get(vault_id, vm_id, conn).state)  # type: ignore[union-attr]
        now = self.clock.now()
        conn.execute(
            "INSERT INTO protected_items(vault_id, vm_id, name, cloud, provider, state, policy, created_at, updated_at,"
            " active_location, epoch, op, prev_state, job_id, switched_at, recovery_cloud, recovery_host, pairing_id)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,1,?,?,?,?,?,?,?)",
            (vault_id, vm_id, name, cloud, provider, S.ENABLING.value, policy_json, now, now, Side.PRIMARY.value,
             Op.PROTECT.value, S.UNPROTECTED.value, job_id, now, recovery_cloud, recovery_host, pairing_id))
        where = f" to host {recovery_host} of cloud {recovery_cloud} (pairing {pairing_id})" if recovery_host else ""
        self._event(conn, vault_id, vm_id, name, Severity.INFO, STATE_CHANGED,
                    f"{name}: protection is being enabled{where} (job {job_id})")
        item = self.get(vault_id, vm_id, conn)
        assert item is not None
        return item

    def begin(self, conn: Conn, vault_id: str, vm_id: str, op: Op, job_id: str,
              expect: ItemState | None = None) -> Item:
        """Start ``op`` on an item inside the caller's transaction (which also creates the job):
        the item goes to the operation's in-progress state, held by ``job_id``; when the
        operation moves the active side, the epoch advances now."""
        item = self.get(vault_id, vm_id, conn)
        if item is None:
            raise NotFound(f"VM {vm_id} is not protected")
        if expect is not None and item.state != expect:
            raise StateConflict(f"VM {item.name} changed state meanwhile (now {item.state}); try again")
        t = transition(op, item.state)
        if t is None:
            raise refusal(item.name, op.value, item.state, site_to_site=item.site_to_site)
        epoch, location, switched = item.epoch, item.location, item.switched_at
        now = self.clock.now()
        if t.switch is not None and t.switch != item.location:
            epoch, location, switched = epoch + 1, t.switch, now
        conn.execute(
            "UPDATE protected_items SET state=?, prev_state=?, op=?, job_id=?, epoch=?, active_location=?,"
            " switched_at=?, updated_at=? WHERE vault_id=? AND vm_id=?",
            (t.during.value, item.state.value, op.value, job_id, epoch, location.value, switched, now, vault_id,
             vm_id))
        self._event(conn, vault_id, vm_id, item.name, Severity.INFO, STATE_CHANGED,
                    f"{item.name}: {op.value} started (job {job_id}); {item.state} → {t.during}")
        if epoch != item.epoch:
            self._switched(conn, item, location, epoch)
        new = self.get(vault_id, vm_id, conn)
        assert new is not None
        return new

    def end(self, conn: Conn, vault_id: str, vm_id: str, job_id: str, ok: bool) -> Outcome:
        """The job holding an item ended: move it to the operation's result, or back to the state
        it started from (and that state's active side, advancing the epoch if it moves). An item
        no longer held by ``job_id`` (a forced unprotect took it over) is left alone."""
        item = self.get(vault_id, vm_id, conn)
        if item is None or item.job_id != job_id:
            return Outcome(item)
        t = transition(Op(item.op), ItemState(item.prev_state))
        if t is None:  # pragma: no cover - the row was written by begin()/create() from this table
            raise StateConflict(f"VM {item.name}: no transition {item.op} from {item.prev_state}")
        now = self.clock.now()
        if ok and t.done is None:
            self._remove(conn, vault_id, vm_id)
            self._event(conn, vault_id, vm_id, item.name, Severity.INFO, STATE_CHANGED,
                        f"{item.name}: {item.op} succeeded; protection is disabled")
            return Outcome(None)
        if ok:
            target = t.done
            assert target is not None
            if target == S.PROTECTED and item.source_missing:
                target = S.SOURCE_MISSING
        else:
            target = ItemState(item.prev_state)
            if target == S.UNPROTECTED:  # protect failed: no item
                self._remove(conn, vault_id, vm_id)
                self._event(conn, vault_id, vm_id, item.name, Severity.WARNING, STATE_CHANGED,
                            f"{item.name}: enabling protection failed (job {job_id})")
                return Outcome(None)
        home = STATES[target].home or item.location
        epoch, switched = item.epoch, item.switched_at
        if home != item.location:
            epoch, switched = epoch + 1, now
        conn.execute(
            "UPDATE protected_items SET state=?, prev_state='', op='', job_id='', epoch=?, active_location=?,"
            " switched_at=?, updated_at=? WHERE vault_id=? AND vm_id=?",
            (target.value, epoch, home.value, switched, now, vault_id, vm_id))
        self._event(conn, vault_id, vm_id, item.name, Severity.INFO if ok else Severity.WARNING, STATE_CHANGED,
                    f"{item.name}: {item.op} {'succeeded' if ok else 'failed'} (job {job_id}); now {target}")
        if epoch != item.epoch:
            self._switched(conn, item, home, epoch)
        new = self.get(vault_id, vm_id, conn)
        return Outcome(new, grant=epoch != item.epoch and home == Side.PRIMARY)

    def take_over(self, conn: Conn, vault_id: str, vm_id: str, job_id: str) -> str:
        """unprotect --force: the item is held by ``job_id`` from now on, whatever held it (the
        job that held it is returned, for the caller to cancel)."""
        item = self.get(vault_id, vm_id, conn)
        if item is None:
            raise NotFound(f"VM {vm_id} is not protected")
        if transition(Op.FORCE_UNPROTECT, item.state) is None:
            raise refusal(item.name, "unprotect --force", item.state)
        previous = item.job_id
        conn.execute("UPDATE protected_items SET state=?, prev_state=?, op=?, job_id=?, updated_at=? WHERE vault_id=?"
                     " AND vm_id=?", (S.DISABLING.value, item.state.value if item.state != S.DISABLING else
                                      (item.prev_state or S.PROTECTED.value), Op.FORCE_UNPROTECT.value, job_id,
                                      self.clock.now(), vault_id, vm_id))
        self._event(conn, vault_id, vm_id, item.name, Severity.WARNING, STATE_CHANGED,
                    f"{item.name}: protection is being disabled by force (job {job_id}) from {item.state}")
        return previous

    def remove_all(self, conn: Conn, vault_id: str, why: str) -> int:
        """Vault teardown: every item of the vault is removed (its jobs were cancelled)."""
        items = self.list_in(conn, vault_id)
        for item in items:
            self._event(conn, vault_id, item.vm_id, item.name, Severity.WARNING, STATE_CHANGED,
                        f"{item.name}: protection removed from {item.state}: {why}")
            self._remove(conn, vault_id, item.vm_id)
        return len(items)

    # ---- signals from replication and inventory ---------------------------------------------------
    def final_point(self, conn: Conn, item: Item, point_id: str) -> None:
        """A planned failover's (or migration's) final point committed: the recovery side is
        active from now on, and the primary is fenced (its epoch is stale)."""
        if item.state not in FINAL_POINT_STATES or item.location != Side.PRIMARY:
            raise StateConflict(f"VM {item.name} is {item.state}: a final point is only taken by a planned "
                                "failover or a migration")
        now = self.clock.now()
        conn.execute("UPDATE protected_items SET epoch=?, active_location=?, switched_at=?, updated_at=? WHERE"
                     " vault_id=? AND vm_id=?", (item.epoch + 1, Side.RECOVERY.value, now, now, item.vault_id,
                                                 item.vm_id))
        self._switched(conn, item, Side.RECOVERY, item.epoch + 1, f" after its final point {point_id}")

    def source_missing(self, conn: Conn, item: Item, what: str) -> None:
        """The VM (or its cloud, host or provider) is no longer reported: a resting Protected
        item goes to SourceMissing (health Critical, points kept); any other state keeps the
        note and goes there when its job ends in Protected."""
        if item.source_missing == what and (item.state != S.PROTECTED):
            return
        state = S.SOURCE_MISSING if item.state == S.PROTECTED else item.state
        conn.execute("UPDATE protected_items SET state=?, source_missing=?, updated_at=? WHERE vault_id=? AND vm_id=?",
                     (state.value, what, self.clock.now(), item.vault_id, item.vm_id))
        if item.source_missing != what:
            self._event(conn, item.vault_id, item.vm_id, item.name, Severity.CRITICAL, SourceMissing.code,
                        f"{item.name}: {what}; its recovery points are kept (state {state})")

    def source_returned(self, conn: Conn, item: Item) -> None:
        if not item.source_missing:
            return
        state = S.PROTECTED if item.state == S.SOURCE_MISSING else item.state
        conn.execute("UPDATE protected_items SET state=?, source_missing='', updated_at=? WHERE vault_id=? AND"
                     " vm_id=?", (state.value, self.clock.now(), item.vault_id, item.vm_id))
        self._event(conn, item.vault_id, item.vm_id, item.name, Severity.INFO, SOURCE_RETURNED,
                    f"{item.name}: reported by provider {item.provider} again; state {state}")

    # ---- fencing ----------------------------------------------------------------------------------
    def check_replication(self, item: Item, epoch: int, host: str) -> None:
        """Raise unless the primary on ``host`` holding ``epoch`` may ship points of ``item`` now."""
        if item.location != Side.PRIMARY or epoch != item.epoch:
            raise self.fenced(item, epoch, host)
        if item.state == S.SOURCE_MISSING:
            raise SourceMissing(f"VM {item.name} is SourceMissing ({item.source_missing}); replication is refused")
        if not STATES[item.state].replicates:
            raise StateConflict(f"VM {item.name} is {item.state}; replication waits until the operation ends",
                                causes=(f"Allowed now: {', '.join(item.allowed) or 'none'}.",),
                                action="Wait for the running job (asr job list).")

    def fenced(self, item: Item, epoch: int, host: str) -> Fenced:
        if item.location == Side.RECOVERY:
            return Fenced(f"{item.name} has failed over; replication from {host} is fenced "
                          f"(epoch {epoch}, current {item.epoch})",
                          details=[f"state {item.state}, active side {item.location}"])
        return Fenced(f"{item.name}: replication from {host} is fenced: it holds epoch {epoch}, the vault's is "
                      f"{item.epoch}", details=[f"state {item.state}, active side {item.location}"],
                      causes=("The host missed a change of the active side (a failover, cancel or failback) and "
                              "has not been granted the current epoch.",))

    def record_fenced_attempt(self, item: Item, host: str) -> None:
        """Remember the last fenced attempt (shown by `asr vm show`); one event per epoch."""
        now = self.clock.now()
        with self.db.write() as conn:
            first = item.fenced_attempt_at < item.switched_at or not item.fenced_attempt_at
            conn.execute("UPDATE protected_items SET fenced_attempt_at=?, fenced_attempt_from=? WHERE vault_id=? AND"
                         " vm_id=?", (now, host, item.vault_id, item.vm_id))
            if first:
                self._event(conn, item.vault_id, item.vm_id, item.name, Severity.WARNING, Fenced.code,
                            f"{item.name} has failed over; replication from {host} is fenced "
                            f"(the on-premises copy is stale since epoch {item.epoch})", server=f"agent/{host}")

    # ---- internals --------------------------------------------------------------------------------
    def _switched(self, conn: Conn, item: Item, side: Side, epoch: int, why: str = "") -> None:
        other = "the on-premises copy" if side == Side.RECOVERY else "the recovery side"
        self._event(conn, item.vault_id, item.vm_id, item.name, Severity.INFO, EPOCH_ADVANCED,
                    f"{item.name}: the {side.value.lower()} side is active{why}; epoch {epoch}; {other} is fenced")

    def _event(self, conn: Conn, vault_id: str, vm_id: str, name: str, severity: Severity, code: str,
               message: str, server: str = "") -> None:
        self.events.record(conn, vault_id, severity, code, message, vm_id=vm_id, vm_name=name, server=server)
