"""Issue 15: a customer-managed key lives only in the memory of the process that runs its job.
The job may end in another process (the site's acknowledgement of its last command reached
that one), whose ``job_done`` cannot drop this process's copy: the runner's turn drops the
keys of jobs that ended, wherever they ended. Regression: the key stayed in memory until
the process exited."""

from __future__ import annotations

from typing import Any

from asrclock import FakeClock
from asrerrors import JobFailed
from chunkfmt import CustomerKey
from cloudsvc.failover.operations import Operations
from cloudsvc.jobs import Jobs
from metastore.database import Database


def test_keys_of_jobs_that_ended_elsewhere_are_dropped(db: Database) -> None:
    clock = FakeClock()
    jobs = Jobs(db, clock)
    with db.write() as conn:
        running = jobs.create(conn, "v1", "PlannedFailover", "vm1", [("Fail over vm1", "")])
        ended = jobs.create(conn, "v1", "PlannedFailover", "vm2", [("Fail over vm2", "")])
    other = Jobs(db, clock)                       # another process ends the second job
    with db.write() as conn:
        other.fail_job(conn, ended, JobFailed("the site said no"))
    ops: Any = Operations.__new__(Operations)     # only its keys and the jobs matter here
    ops.jobs = jobs
    key = CustomerKey.generate()
    ops.keys = {running: key, ended: key, "gone": key}
    ops.forget_ended_keys()
    assert ops.keys == {running: key}
