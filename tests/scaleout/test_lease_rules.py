"""Issue 15: the lease rules, as two holders and one clock over one database.

Named leases (``cloudsvc.leases``) and job leases (``Jobs.claim``) obey the same rules:
at most one holder at any time; the holder keeps its lease by renewing it before it
expires; another holder takes it only once it has expired; a holder that lost a lease
records nothing under it. A hypothesis state machine drives both kinds with two holders,
renewals, releases and clock jumps, and checks the rules against a model after each step.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from asrclock import FakeClock
from cloudsvc.jobs import Jobs
from cloudsvc.leases import Leases
from metastore.database import Database
from tests.scaleout.fixture import metadata_db

PERIOD = 10.0
KINDS = ("PlannedFailover",)
HOLDERS = ("a", "b")


def test_a_lease_is_taken_only_once_expired(db: Database) -> None:
    clock = FakeClock()
    a, b = Leases(db, clock, "a", PERIOD), Leases(db, clock, "b", PERIOD)
    assert a.acquire("gc") and not b.acquire("gc")
    clock.advance(PERIOD - 1)
    assert a.acquire("gc")                      # renewed: another period from now
    clock.advance(PERIOD - 1)
    assert not b.acquire("gc") and b.holder_of("gc") == "a"
    clock.advance(1)                            # a stopped renewing: its lease ran out
    assert b.acquire("gc") and b.holder_of("gc") == "b"
    with db.write() as conn:
        assert not a.held_in(conn, "gc") and b.held_in(conn, "gc")
    assert not a.acquire("gc")
    b.release("gc")                             # a clean stop: no need to wait for expiry
    assert a.acquire("gc")


def test_a_job_is_run_by_one_process_and_taken_over_after_its_lease(db: Database) -> None:
    clock = FakeClock()
    jobs = Jobs(db, clock)
    with db.write() as conn:
        job = jobs.create(conn, "v1", KINDS[0], "vm1", [("materialise", "")])
    held_a = jobs.claim(KINDS, "a", PERIOD)
    held_b = jobs.claim(KINDS, "b", PERIOD)
    assert [r["id"] for r in held_a] == [job] and held_b == []
    clock.advance(PERIOD)                      # a died: no renewal
    held_b = jobs.claim(KINDS, "b", PERIOD)
    assert [r["id"] for r in held_b] == [job] and held_b[0]["takeovers"] == 1
    held_a = jobs.claim(KINDS, "a", PERIOD)   # a comes back from a stall: the job is gone
    assert held_a == [] and jobs.owner_of(job) == "b"
    with db.write() as conn:
        assert not jobs.held_in(conn, job, "a") and jobs.held_in(conn, job, "b")
    jobs.release("b")
    held_a = jobs.claim(KINDS, "a", PERIOD)
    assert [r["id"] for r in held_a] == [job]


class TwoHolders(RuleBasedStateMachine):
    """Two processes and a clock: the model says who may hold each lease; the DB must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.dir: Path | None = None

    @initialize(tmp=st.just(None))
    def setup(self, tmp: None) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="leases-"))
        self.clock = FakeClock()
        self.db = metadata_db(self.dir / "m.db")
        self.leases = {h: Leases(self.db, self.clock, h, PERIOD) for h in HOLDERS}
        self.jobs = Jobs(self.db, self.clock)
        with self.db.write() as conn:
            self.job = self.jobs.create(conn, "v1", KINDS[0], "vm1", [("materialise", "")])
        # the model: (holder, expires_at) of the named lease and of the job
        self.named: tuple[str, float] = ("", 0.0)
        self.job_lease: tuple[str, float] = ("", 0.0)
        self.takeovers = 0

    def _free_for(self, lease: tuple[str, float], holder: str) -> bool:
        return lease[0] in ("", holder) or lease[1] <= self.clock.now()

    def _fresh(self, lease: tuple[str, float], holder: str) -> bool:
        """Ours with at least half the period left: not renewed (no write)."""
        return lease[0] == holder and lease[1] - self.clock.now() >= PERIOD / 2

    @rule(holder=st.sampled_from(HOLDERS))
    def acquire_named(self, holder: str) -> None:
        got = self.leases[holder].acquire("maintenance")
        assert got == self._free_for(self.named, holder)
        if got and not self._fresh(self.named, holder):
            self.named = (holder, self.clock.now() + PERIOD)

    @rule(holder=st.sampled_from(HOLDERS))
    def release_named(self, holder: str) -> None:
        self.leases[holder].release("maintenance")
        if self.named[0] == holder:
            self.named = ("", 0.0)

    @rule(holder=st.sampled_from(HOLDERS))
    def claim_job(self, holder: str) -> None:
        held = self.jobs.claim(KINDS, holder, PERIOD)
        before = self.job_lease
        may = self._free_for(before, holder)
        assert [r["id"] for r in held] == ([self.job] if may else [])
        if may and not self._fresh(before, holder):
            if before[0] not in ("", holder):
                self.takeovers += 1
            self.job_lease = (holder, self.clock.now() + PERIOD)
        assert self.jobs.owner_of(self.job) == self.job_lease[0]

    @rule(holder=st.sampled_from(HOLDERS))
    def release_jobs(self, holder: str) -> None:
        self.jobs.release(holder)
        if self.job_lease[0] == holder:
            self.job_lease = (holder, 0.0)

    @rule(seconds=st.sampled_from([0.5, 3.0, PERIOD - 0.5, PERIOD, 2 * PERIOD]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def one_holder_records(self) -> None:
        """Exactly the model's holder (whom nobody took the lease from) may record a result."""
        if self.dir is None:
            return
        with self.db.write() as conn:
            for h in HOLDERS:
                assert self.leases[h].held_in(conn, "maintenance") == (self.named[0] == h)
                assert self.jobs.held_in(conn, self.job, h) == (self.job_lease[0] == h)
            row = conn.execute("SELECT takeovers FROM jobs WHERE id=?", (self.job,)).fetchone()
            assert row["takeovers"] == self.takeovers

    def teardown(self) -> None:
        # each example makes its own directory: leave none behind in /tmp
        if self.dir is not None:
            self.db.close()
            shutil.rmtree(self.dir)


TwoHolders.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_two_holders = TwoHolders.TestCase
