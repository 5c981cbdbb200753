"""Issue 15: a runner that stalls past its job's lease while a cloud step runs. Another
runner takes the job over and runs the step again; the stalled one, when it goes on, records
nothing (``Runner.finish`` checks the lease in the transaction that records the result) and
its next turn knows it lost the job (a materialisation then stops at its next progress
report). Two runners in one process stand for two processes: they share nothing but the
database."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from asrclock import FakeClock
from asrerrors import JobFailed
from cloudsvc.failover.runner import Runner
from cloudsvc.failover.steps import Step, StepKind
from cloudsvc.jobs import Jobs
from cloudsvc.leases import Leases
from metastore.database import Database
from tests.harness import wait_for
from tests.scaleout.fixture import metadata_db

KIND = "PlannedFailover"
LEASE_S = 10.0


def _runner(db: Database, clock: FakeClock, holder: str, gate: threading.Event, results: list[bool]) -> Runner:
    jobs = Jobs(db, clock)
    fake: Any = SimpleNamespace(expire=lambda timeout: 0, reap=lambda: 0, forget_ended_keys=lambda: None)
    r = Runner(db, clock, jobs, fake, fake, fake, fake, fake, fake, threading.Event(),
               Leases(db, clock, holder, LEASE_S))

    def step(job: Any, ctx: dict[str, Any], seq: int, st: Step) -> None:
        gate.wait(30)
        results.append(r.finish(job["id"], seq, True, f"done by {holder}"))

    r.add_kinds({KIND}, {StepKind.COMMIT: step})
    return r


def test_a_stalled_runner_records_nothing_after_a_takeover(tmp_path: Path) -> None:
    clock = FakeClock()
    db = metadata_db(tmp_path / "metadata.db")
    gate_a, gate_b = threading.Event(), threading.Event()
    done_a: list[bool] = []
    done_b: list[bool] = []
    a = _runner(db, clock, "a", gate_a, done_a)
    b = _runner(db, clock, "b", gate_b, done_b)
    jobs = Jobs(db, clock)
    ctx = {"steps": [Step(0, StepKind.COMMIT, "Commit the failover of vm1", "vm1").to_dict()],
           "vms": {"vm1": {"name": "vm1"}}}
    with db.write() as conn:
        job = jobs.create(conn, "v1", KIND, "vm1", [("Commit the failover of vm1", "")], ctx)
    try:
        a.tick()                                    # A claims the job and starts the step
        b.tick()                                    # B leaves it alone: A's lease is in force
        assert jobs.owner_of(job) == "a" and b.running == set()
        wait_for(lambda: a.running == {(job, 0)}, 10, what="A's step running")
        clock.advance(LEASE_S)                      # A stalls: no tick renews its lease
        b.tick()                                    # B takes over and runs the step again
        assert jobs.owner_of(job) == "b"
        wait_for(lambda: b.running == {(job, 0)}, 10, what="B's step running")
        assert [t["attempts"] for t in jobs.tasks(job)] == [2]
        a.tick()                                    # A's next turn: it lost the job
        assert job in a.lost
        gate_a.set()                                # A's step goes on and tries to record
        wait_for(lambda: done_a, 10, what="A's step ended")
        assert done_a == [False]
        assert [t["state"] for t in jobs.tasks(job)] == ["InProgress"]
        gate_b.set()
        wait_for(lambda: done_b, 10, what="B's step ended")
        assert done_b == [True]
        [task] = jobs.tasks(job)
        assert task["state"] == "Succeeded" and task["output"] == "done by b"
        assert jobs.get("v1", job)[0]["state"] == "Succeeded"
    finally:
        gate_a.set()
        gate_b.set()
        a.stop()
        b.stop()
        db.close()


def test_a_lease_that_ran_out_but_nobody_took_is_still_the_holders(tmp_path: Path) -> None:
    """The clock jumped past the lease while a step ran (a test's fake clock, a suspended
    VM): nobody else took the job, so the step's result is recorded, not dropped and run
    again. Regression: ``held_in`` judged by the expiry and the step ran twice."""
    clock = FakeClock()
    db = metadata_db(tmp_path / "metadata.db")
    gate = threading.Event()
    done: list[bool] = []
    a = _runner(db, clock, "a", gate, done)
    jobs = Jobs(db, clock)
    ctx = {"steps": [Step(0, StepKind.COMMIT, "Commit the failover of vm1", "vm1").to_dict()],
           "vms": {"vm1": {"name": "vm1"}}}
    try:
        with db.write() as conn:
            job = jobs.create(conn, "v1", KIND, "vm1", [("Commit the failover of vm1", "")], ctx)
        a.tick()
        wait_for(lambda: a.running == {(job, 0)}, 10, what="the step running")
        clock.advance(3 * LEASE_S)
        gate.set()
        wait_for(lambda: done, 10, what="the step ended")
        assert done == [True]
        [task] = jobs.tasks(job)
        assert task["state"] == "Succeeded" and task["attempts"] == 1
    finally:
        gate.set()
        a.stop()
        db.close()


def test_a_lost_job_stops_its_materialisation_at_the_next_progress_report(tmp_path: Path) -> None:
    """Known lost (the runner's turn saw it), or found held by another process in the job's
    row (the whole process stalled and its runner has not turned yet): the next report stops
    the copy."""
    clock = FakeClock()
    db = metadata_db(tmp_path / "metadata.db")
    r = _runner(db, clock, "a", threading.Event(), [])
    jobs = Jobs(db, clock)
    point = SimpleNamespace(disks=[SimpleNamespace(disk_index=0, virtual_size=1 << 20)])
    try:
        with db.write() as conn:
            job = jobs.create(conn, "v1", KIND, "vm1", [("Fail over vm1", "")])
            r.claim_in(conn, job)
        report = r._bytes_progress(job, 0, point, 0, 1 << 20)
        report(1, 16)                               # held: the copy goes on
        with r._lock:
            r.lost.add(job)
        with pytest.raises(JobFailed, match="taken over"):
            report(2, 16)
        with r._lock:
            r.lost.clear()
        clock.advance(LEASE_S)
        assert [j["id"] for j in jobs.claim((KIND,), "b", LEASE_S)] == [job]
        report = r._bytes_progress(job, 0, point, 0, 1 << 20)
        with pytest.raises(JobFailed, match="taken over"):
            report(3, 16)
    finally:
        r.stop()
        db.close()
