"""Issue 15, must-show 3: kill -9 of the cloud service that runs a planned-failover job in
the middle of materialising: the other service takes the job over within a lease period and
finishes it; the recovered disks equal the point (qemu-img compare); nothing of the job ran
twice (one final point, one command per site task, one recovered VM; the materialisation
started twice and completed once, as the task's attempt records say)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.failover.fixture import VAULT, assert_disks_equal, recovered
from tests.harness import Cloud, Procs, pause_fault, wait_for
from tests.replication.fixture import protect
from tests.scaleout.fixture import db_all, db_one, two_services

LEASE_S = 4.0


def _owner_pid(cloud: Cloud, job_id: str) -> int:
    """The pid in the job's holder id (``cloudsvc.leases.holder_id``: host:pid:random)."""
    row = db_one(cloud, "SELECT owner FROM jobs WHERE id=?", (job_id,))
    owner = str(row["owner"]) if row else ""
    return int(owner.split(":")[1]) if owner.count(":") == 2 else 0


def test_planned_failover_survives_kill9_of_the_service_running_it(
        procs: Procs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_LEASE_SECONDS", str(LEASE_S))
    monkeypatch.setenv("ASR_MAINTENANCE_SECONDS", "3600")   # no store reads but the failover's
    a, b = two_services(procs, tmp_path)
    p = protect(a, tmp_path)                 # A serves the site: the provider's commands, the agent's cycles
    p.once()
    p.write(0, 2 * 65536, 65536, 0x61)       # the last changes, shipped by the planned failover
    p.write(1, 0, 4096, 0x62)
    refs = p.snapshot_raw(tmp_path, "final")
    points_before = len(p.points())

    # B runs the job: a failover runs in the process it was made through while that one lives.
    # A fault pauses B's materialisation inside a read of the store (B reads the store for
    # nothing else: A serves the site, and so the final cycle)
    fault = pause_fault(tmp_path, after=4)
    b_pid = b.restart("cloudsvc-b", **fault.env).popen.pid
    assert a.proc is not None and b.proc is not None
    a_pid = a.proc.popen.pid
    job_id = b.asr_json("failover", "planned", p.vm, *VAULT)["job_id"]
    assert _owner_pid(a, job_id) == b_pid
    wait_for(fault.fired.exists, 120, what="B's materialisation paused inside a read of the store")
    rvm = wait_for(lambda: [r for r in recovered(p) if r["state"] == "Creating"], 30, what="a VM being made")[0]
    # the job's lease still names the process that runs it: B, the one paused
    assert _owner_pid(a, job_id) == b_pid

    b.proc.kill9()
    killed = time.monotonic()
    wait_for(lambda: _owner_pid(a, job_id) == a_pid, LEASE_S + 5, what="A took the job over")
    took = time.monotonic() - killed
    assert took <= LEASE_S + 2.0, f"the takeover took {took:.1f} s with a {LEASE_S} s lease"

    job = a.asr_json("job", "wait", job_id, *VAULT)
    assert job["state"] == "Succeeded", job
    [done] = recovered(p)
    assert done["id"] == rvm["id"] and done["state"] == "Running"
    assert done["point_id"] == p.points()[-1]["point_id"]
    assert_disks_equal(done, refs)
    assert not list(Path(done["disks"][0]["path"]).parent.glob("*.partial"))

    # nothing of the job ran twice
    assert len(p.points()) == points_before + 1                      # one final point
    [row] = db_all(a, "SELECT takeovers, owner FROM jobs WHERE id=?", (job_id,))
    assert row["takeovers"] == 1
    tasks = db_all(a, "SELECT name, state, attempts, command_id FROM job_tasks WHERE job_id=? ORDER BY seq",
                   (job_id,))
    assert all(t["state"] == "Succeeded" for t in tasks), [dict(t) for t in tasks]
    site = [t for t in tasks if t["command_id"]]
    assert site and all(t["attempts"] == 1 for t in site), [dict(t) for t in tasks]
    commands = db_all(a, "SELECT c.id FROM commands c JOIN job_tasks t ON t.command_id=c.id WHERE t.job_id=?",
                      (job_id,))
    assert len(commands) == len(site)
    made = [t for t in tasks if not t["command_id"]]                   # the cloud step: materialise
    assert [t["attempts"] for t in made] == [2], [dict(t) for t in tasks]   # B's, cut short; then A's
    assert len(db_all(a, "SELECT id FROM recovered_vms WHERE job_id=?", (job_id,))) == 1
