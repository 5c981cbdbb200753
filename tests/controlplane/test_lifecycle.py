"""The protected-item state machine (``cloudsvc.lifecycle``), driven by hypothesis against a
real SQLite metadata store: random operations, job ends, final points and source signals,
checked after every step against an independent model of the rules:

* an operation starts only from a state the table lists for it, and a refusal names the
  allowed operations, which are exactly the table's for that state;
* a job that succeeds moves the item to the operation's result; one that fails puts it back
  in the state it started from;
* the epoch never goes down, and advances exactly when the active side changes;
* a resting item's active side is its state's home side; a fenced epoch is never current;
* ``end`` asks for a grant exactly when a failure gave the primary back without telling it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from asrclock import FakeClock
from asrerrors import Fenced, StateConflict
from cloudsvc.events import Events
from cloudsvc.lifecycle import (
    FINAL_POINT_STATES,
    STATES,
    TRANSITIONS,
    ItemState,
    Op,
    ProtectedItems,
    Side,
    allowed,
    transition,
)
from cloudsvc.schema import MIGRATIONS
from metastore.database import Database

S = ItemState
VAULT = "v1"


def _db(path: Path) -> Database:
    db = Database(str(path), MIGRATIONS)
    with db.write() as conn:
        conn.execute("INSERT INTO vaults(id, name, region, created_at, ca_cert_pem, ca_key_pem)"
                     " VALUES (?, 'contoso', 'japaneast', 0, '', '')", (VAULT,))
    return db


def test_allowed_operations_come_from_the_transition_table() -> None:
    for state in ItemState:
        expected = [t.op.value for t in TRANSITIONS if state in t.sources]
        assert allowed(state) == list(dict.fromkeys(expected))
    assert allowed(S.PROTECTED) == ["unprotect", "unprotect-force", "test-failover", "planned-failover",
                                    "unplanned-failover", "migrate"]
    assert allowed(S.UNPLANNED_FAILOVER) == []
    assert "failback" in allowed(S.COMMITTED) and "commit" in allowed(S.FAILBACK_COMMIT_PENDING)
    # what only one kind of protection has is not offered to the other
    assert "reprotect" in allowed(S.COMMITTED, site_to_site=True)
    assert "reprotect" not in allowed(S.COMMITTED, site_to_site=False)
    assert "migrate" not in allowed(S.PROTECTED, site_to_site=True)


def test_every_state_is_reachable_and_described() -> None:
    reachable = {S.UNPROTECTED}
    for t in TRANSITIONS:
        reachable.add(t.during)
        if t.done is not None:
            reachable.add(t.done)
    reachable.add(S.SOURCE_MISSING)
    assert reachable == set(ItemState)
    assert set(STATES) == set(ItemState) - {S.UNPROTECTED}


def test_refusal_names_the_allowed_operations(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    items = ProtectedItems(_db(tmp_path / "m.db"), clock, Events(_db(tmp_path / "e.db"), clock))
    with items.db.write() as conn:
        items.create(conn, VAULT, vm_id="vm1", name="db01", cloud="gold", provider="p1", policy_json="{}",
                     job_id="j1")
        items.end(conn, VAULT, "vm1", "j1", True)
    with pytest.raises(StateConflict) as err:
        items.require(VAULT, "vm1", "db01", Op.COMMIT)
    assert "commit is not allowed for VM 'db01' in state Protected" in str(err.value)
    assert "unplanned-failover" in " ".join(err.value.causes)


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.clock = FakeClock(1_000_000.0)
        self.db = _db(Path(self.dir.name) / "m.db")
        self.items = ProtectedItems(self.db, self.clock, Events(self.db, self.clock))
        # the model
        self.state = S.UNPROTECTED
        self.side = Side.PRIMARY
        self.epoch = 0
        self.job = ""
        self.source = S.UNPROTECTED
        self.op: Op | None = None
        self.missing = ""
        self.n = 0

    def teardown(self) -> None:
        self.db.close()
        self.dir.cleanup()

    def _new_job(self) -> str:
        self.n += 1
        return f"job{self.n}"

    @precondition(lambda self: self.state == S.UNPROTECTED)
    @rule()
    def protect(self) -> None:
        job = self._new_job()
        with self.db.write() as conn:
            item = self.items.create(conn, VAULT, vm_id="vm1", name="db01", cloud="gold", provider="p1",
                                     policy_json="{}", job_id=job)
        assert item.state == S.ENABLING and item.epoch == 1 and item.location == Side.PRIMARY
        self.state, self.side, self.epoch, self.job, self.source, self.op = S.ENABLING, Side.PRIMARY, 1, job, \
            S.UNPROTECTED, Op.PROTECT
        self.missing = ""

    @precondition(lambda self: self.state != S.UNPROTECTED)
    @rule(op=st.sampled_from([o for o in Op if o not in (Op.PROTECT, Op.FORCE_UNPROTECT)]))
    def start(self, op: Op) -> None:
        t = transition(op, self.state)
        job = self._new_job()
        if t is None:
            with pytest.raises(StateConflict) as err:
                with self.db.write() as conn:
                    self.items.begin(conn, VAULT, "vm1", op, job)
            # the model's VM is protected to the vault: no site-to-site operation (reprotect) is offered
            ops = allowed(self.state, site_to_site=False)
            assert f"Allowed now: {', '.join(ops) or 'none'}" in " ".join(err.value.causes)
            return
        with self.db.write() as conn:
            item = self.items.begin(conn, VAULT, "vm1", op, job)
        if t.switch is not None and t.switch != self.side:
            self.side, self.epoch = t.switch, self.epoch + 1
        self.source, self.state, self.job, self.op = self.state, t.during, job, op
        assert item.state == t.during and item.epoch == self.epoch

    @precondition(lambda self: self.state != S.UNPROTECTED and self.job != "")
    @rule(ok=st.booleans())
    def job_ends(self, ok: bool) -> None:
        with self.db.write() as conn:
            out = self.items.end(conn, VAULT, "vm1", self.job, ok)
        assert self.op is not None
        t = transition(self.op, self.source)
        assert t is not None
        if ok and t.done is None or not ok and self.source == S.UNPROTECTED:
            assert out.item is None
            self.state, self.job = S.UNPROTECTED, ""
            return
        target = t.done if ok else self.source
        assert target is not None
        if ok and target == S.PROTECTED and self.missing:
            target = S.SOURCE_MISSING
        home = STATES[target].home or self.side
        moved = home != self.side
        if moved:
            self.side, self.epoch = home, self.epoch + 1
        assert out.grant == (moved and home == Side.PRIMARY)
        self.state, self.job, self.op = target, "", None

    @precondition(lambda self: self.state in FINAL_POINT_STATES and self.side == Side.PRIMARY)
    @rule()
    def final_point(self) -> None:
        item = self.items.get(VAULT, "vm1")
        assert item is not None
        with self.db.write() as conn:
            self.items.final_point(conn, item, "p-final")
        self.side, self.epoch = Side.RECOVERY, self.epoch + 1

    @precondition(lambda self: self.state != S.UNPROTECTED)
    @rule(gone=st.booleans())
    def source_signal(self, gone: bool) -> None:
        item = self.items.get(VAULT, "vm1")
        assert item is not None
        with self.db.write() as conn:
            if gone:
                self.items.source_missing(conn, item, "provider p1 no longer reports the VM")
                self.missing = "provider p1 no longer reports the VM"
                if self.state == S.PROTECTED:
                    self.state = S.SOURCE_MISSING
            else:
                self.items.source_returned(conn, item)
                if self.missing and self.state == S.SOURCE_MISSING:
                    self.state = S.PROTECTED
                self.missing = ""

    @precondition(lambda self: self.state != S.UNPROTECTED)
    @rule(stale=st.integers(min_value=0, max_value=3))
    def replicate(self, stale: int) -> None:
        item = self.items.get(VAULT, "vm1")
        assert item is not None
        epoch = self.epoch - stale
        may = stale == 0 and self.side == Side.PRIMARY and STATES[self.state].replicates \
            and self.state != S.SOURCE_MISSING
        if may:
            self.items.check_replication(item, epoch, "hv01")
        elif stale or self.side == Side.RECOVERY:
            with pytest.raises(Fenced):
                self.items.check_replication(item, epoch, "hv01")
        else:
            with pytest.raises(StateConflict):
                self.items.check_replication(item, epoch, "hv01")

    @invariant()
    def matches_the_model(self) -> None:
        item = self.items.get(VAULT, "vm1")
        if self.state == S.UNPROTECTED:
            assert item is None
            return
        assert item is not None
        assert item.state == self.state
        assert item.epoch == self.epoch
        assert item.location == self.side
        assert item.allowed == allowed(self.state, site_to_site=False)
        info = STATES[item.state]
        if info.resting and info.home is not None:
            assert item.location == info.home


Lifecycle.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_lifecycle_state_machine = Lifecycle.TestCase
