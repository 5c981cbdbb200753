"""Issue 10, must-show 2: a seeded, randomized lifecycle run against real processes.

One cloud service, one provider and one agent (hv01) with a protected VM on qemu-made
images. The policy starts replication hours from now, so the agent daemon's own schedule
stays idle and every point is one the test took (a `once` cycle, or a planned failover's
final point), at an instant whose disk content the model knows. Each step is drawn from
what the model says is possible: sequence-numbered guest writes, replication cycles,
protect/unprotect (forced too), test failover and completion, planned and unplanned
failover, commit, cancel, change point, failback, maintenance (retention, sweeps, GC), and
kill -9 with restart of any daemon (the cloud service also in the middle of a job). After
every step:

* at most one side is writable: a running failover VM means the vault refuses the primary
  (a cycle from it is fenced, ASR-0044) and, once refused, the primary refuses guest writes;
  a primary the vault takes points from has no running failover VM;
* the item's state is the model's, and its allowed operations are the lifecycle table's;
* no job is left InProgress (each is waited for with a deadline);
* every point the vault lists is one the model knows; periodically and at the end every
  listed point verifies and exports to exactly the bytes the source held at its instant.

Bounded for CI (``ASR_LIFECYCLE_STEPS``, default 28; seeds from ``ASR_LIFECYCLE_SEEDS``,
default "1"); ``ASR_LIFECYCLE_LONG=1`` runs 200 steps for each of five seeds. Seeds, steps
and results are recorded in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from asrcli.client import Client
from asrpb import replication_pb2, replication_pb2_grpc
from cloudsvc.lifecycle import ItemState, allowed
from tests.controlplane.sitefix import agent_vm
from tests.failover.fixture import compare
from tests.harness import Cloud, Procs, run, wait_for
from tests.replication.fixture import MiB, Protected, protect

LONG = os.environ.get("ASR_LIFECYCLE_LONG") == "1"
STEPS = int(os.environ.get("ASR_LIFECYCLE_STEPS", "200" if LONG else "28"))
SEEDS = [int(s) for s in os.environ.get("ASR_LIFECYCLE_SEEDS", "1,2,3,4,5" if LONG else "1").split(",")]
JOB_DEADLINE_S = 120.0
VAULT = ("--vault", "contoso")
S = ItemState


@dataclass
class Model:
    state: ItemState = S.PROTECTED
    points: dict[str, list[Path]] = field(default_factory=dict)   # point id -> raw disks at its instant
    seq: int = 0
    site_up: bool = True        # provider and agent daemons running
    steps: list[str] = field(default_factory=list)


class Run:
    def __init__(self, seed: int, procs: Procs, root: Path) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.root = root
        self.cloud = Cloud(procs, root / "cloud").start()
        self.p: Protected = protect(self.cloud, root, retention_hours=1)
        self.m = Model()
        self.n_raw = 0

    # ---- helpers ---------------------------------------------------------------------------
    def asr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cloud.asr(*args, *VAULT, check=check)

    def job(self, *args: str) -> dict[str, Any]:
        res = self.cloud.asr(*args, *VAULT, "--json", check=False)
        doc = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
        job_id = doc.get("job_id") or doc.get("id")
        assert job_id, (args, res.returncode, res.stderr)
        return self.wait_job(str(job_id))

    def wait_job(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_DEADLINE_S
        while True:
            doc = self.cloud.asr_json("job", "show", job_id, *VAULT)
            if doc["state"] in ("Succeeded", "Failed", "Cancelled"):
                return dict(doc)
            assert time.monotonic() < deadline, f"job {job_id} still {doc['state']} after {JOB_DEADLINE_S}s: {doc}"
            time.sleep(0.2)

    def vm(self) -> dict[str, Any]:
        return dict(self.cloud.asr_json("vm", "show", self.p.vm, *VAULT))

    def raw(self) -> list[Path]:
        self.n_raw += 1
        return self.p.snapshot_raw(self.root, f"s{self.n_raw}")

    def once(self) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "agent.replication", "once", self.p.vm_id, "--config", str(self.p.config)],
                   env=self.cloud.env(), timeout=300)

    def agent_view(self) -> dict[str, Any]:
        res = agent_vm(self.p.site, "hv01", "show", self.p.vm, "--json")
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout))

    def recovered(self, kind: str = "") -> list[dict[str, Any]]:
        return [r for r in self.cloud.asr_json("recovered-vm", "list", *VAULT)
                if r["state"] != "Deleting" and (not kind or r["kind"] == kind)]

    def disks_equal(self, rvm: dict[str, Any], refs: list[Path]) -> None:
        for d, ref in zip(sorted(rvm["disks"], key=lambda d: d["index"]), refs, strict=True):
            r = compare(d["path"], "vpc", ref, "raw")
            assert r.returncode == 0, (self.m.steps[-5:], d, r.stdout)

    # ---- steps -----------------------------------------------------------------------------
    def choices(self) -> list[tuple[str, int]]:
        st = self.m.state
        has_point = bool(self.m.points)
        c: list[tuple[str, int]] = [("kill_restart", 2), ("maintenance", 1)]
        if self.m.site_up:          # the host is up: its guest writes and its cycles
            c += [("write", 6), ("replicate", 6)]
        if st == S.UNPROTECTED and self.m.site_up:
            c.append(("protect", 4))
        if st == S.PROTECTED and self.m.site_up:
            c.append(("unprotect", 1))
        if st in (S.PROTECTED, S.TEST_CLEANUP_PENDING):
            c.append(("unprotect_force", 1))
        if st == S.PROTECTED and has_point:
            c += [("test", 3), ("unplanned", 3), ("job_with_cloud_kill", 1)]
        if st == S.PROTECTED and self.m.site_up:
            c.append(("planned", 3))
        if st == S.TEST_CLEANUP_PENDING:
            c += [("test_complete", 4), ("unplanned", 1)]
        if st == S.COMMIT_PENDING:
            c += [("commit", 3), ("cancel", 2)]
            if len(self.m.points) > 1:
                c.append(("change_point", 2))
        if st == S.COMMITTED and self.m.site_up:
            c.append(("failback", 5))
        if st == S.FAILBACK_COMMIT_PENDING:
            c.append(("commit", 5))
        if not self.m.site_up:
            c.append(("restart_site", 6))
        return c

    def step(self) -> None:
        names, weights = zip(*self.choices(), strict=True)
        name = self.rng.choices(names, weights)[0]
        self.m.steps.append(name)
        getattr(self, "do_" + name)()
        self.check()

    def do_write(self) -> None:
        self.m.seq += 1
        disk = self.rng.randrange(2)
        size = 8 * MiB if disk == 0 else 4 * MiB
        blocks = self.rng.randint(1, 3)
        offset = self.rng.randrange(0, size // 65536 - blocks) * 65536
        res = agent_vm(self.p.site, "hv01", "write", self.p.vm, "--disk", str(disk), "--offset", str(offset),
                       "--length", str(blocks * 65536), "--pattern", str(self.m.seq % 255 + 1))
        fence = self.agent_view().get("fenced")
        if fence:
            assert res.returncode == 44 and "ASR-0044" in res.stderr, res.stderr
        else:
            assert res.returncode == 0, res.stderr

    def do_replicate(self) -> None:
        res = self.once()
        st = self.vm()
        if res.returncode == 0:
            point = json.loads(res.stdout.strip().splitlines()[-1])["point_id"]
            assert st["active_location"] == "Primary" and st["protection_state"] in (
                S.PROTECTED, S.TEST_CLEANUP_PENDING, S.FAILBACK_COMMIT_PENDING), st
            assert not self.recovered("failover") or st["protection_state"] == S.FAILBACK_COMMIT_PENDING
            self.m.points[point] = self.raw()
        elif self.m.state == S.UNPROTECTED:
            assert res.returncode in (32, 40, 44), res.stderr   # not protected (or still fenced by a migration)
        elif st["active_location"] == "Recovery":
            assert res.returncode == 44 and "ASR-0044" in res.stderr, res.stderr
            assert self.agent_view().get("fenced"), "a refused primary must fence itself"
        elif self.m.state == S.SOURCE_MISSING:
            assert res.returncode == 46, res.stderr
        else:
            raise AssertionError(f"cycle refused in {self.m.state}: {res.returncode} {res.stderr}")

    def do_protect(self) -> None:
        job = self.job("vm", "protect", self.p.vm)
        assert job["state"] == "Succeeded", job
        self.m.state = S.PROTECTED
        assert not self.agent_view().get("fenced")      # EnableReplication grants the epoch

    def do_unprotect(self) -> None:
        job = self.job("vm", "unprotect", self.p.vm)
        assert job["state"] == "Succeeded", job
        self.m.state = S.UNPROTECTED
        self.m.points.clear()

    def do_unprotect_force(self) -> None:
        job = self.job("vm", "unprotect", self.p.vm, "--force")
        assert job["state"] == "Succeeded", job
        self.m.state = S.UNPROTECTED
        self.m.points.clear()

    def do_test(self) -> None:
        job = self.job("failover", "test", self.p.vm)
        assert job["state"] == "Succeeded", job
        [rvm] = self.recovered("test")
        self.disks_equal(rvm, self.m.points[rvm["point_id"]])
        self.m.state = S.TEST_CLEANUP_PENDING

    def do_test_complete(self) -> None:
        assert self.job("failover", "test-complete", self.p.vm)["state"] == "Succeeded"
        assert not self.recovered("test")
        self.m.state = S.PROTECTED

    def do_planned(self) -> None:
        job = self.job("failover", "planned", self.p.vm)
        assert job["state"] == "Succeeded", job
        final = job["tasks"][0]["output"].split()[-1]
        self.m.points[final] = self.raw()               # the VM is off: the source holds still
        [rvm] = self.recovered("failover")
        assert rvm["point_id"] == final
        self.disks_equal(rvm, self.m.points[final])
        assert self.agent_view().get("fenced"), "the primary fences itself after its final point"
        self.m.state = S.COMMIT_PENDING

    def do_unplanned(self) -> None:
        args = ["failover", "unplanned", self.p.vm] + (["--shutdown-source"] if self.rng.random() < 0.5 else [])
        prev = self.m.state
        job = self.job(*args)
        assert job["state"] == "Succeeded", job
        [rvm] = self.recovered("failover")
        latest = max(self.points_listed(), key=lambda x: x["created_at"])["point_id"]
        assert rvm["point_id"] == latest
        self.disks_equal(rvm, self.m.points[latest])
        assert prev != S.TEST_CLEANUP_PENDING or not self.recovered("test")
        self.m.state = S.COMMIT_PENDING

    def do_commit(self) -> None:
        assert self.job("failover", "commit", self.p.vm)["state"] == "Succeeded"
        self.m.state = S.COMMITTED if self.m.state == S.COMMIT_PENDING else S.PROTECTED

    def do_cancel(self) -> None:
        assert self.job("failover", "cancel", self.p.vm)["state"] == "Succeeded"
        assert not self.recovered("failover")
        self.m.state = S.PROTECTED
        if self.m.site_up:   # the primary is given its epoch back (a grant the site takes when it is up)
            wait_for(lambda: not self.agent_view().get("fenced"), 30, what="the primary unfenced after cancel")

    def do_change_point(self) -> None:
        point = self.rng.choice([x["point_id"] for x in self.points_listed()])
        assert self.job("failover", "change-point", self.p.vm, "--point", point)["state"] == "Succeeded"
        [rvm] = self.recovered("failover")
        assert rvm["point_id"] == point
        self.disks_equal(rvm, self.m.points[point])

    def do_failback(self) -> None:
        [rvm] = self.recovered("failover")
        job = self.job("failover", "planned", self.p.vm, "--direction", "to-primary")
        assert job["state"] == "Succeeded", job
        for (img, fmt), d in zip(self.p.disks, sorted(rvm["disks"], key=lambda d: d["index"]), strict=True):
            assert compare(img, fmt, d["path"], "vpc").returncode == 0
        assert not self.agent_view().get("fenced")
        self.m.state = S.FAILBACK_COMMIT_PENDING

    def do_maintenance(self) -> None:
        client = Client(self.cloud.endpoint, str(self.cloud.credentials))
        try:
            client.call(replication_pb2_grpc.PointsStub(client.channel).RunMaintenance,
                        replication_pb2.MaintenanceRequest(vault="contoso"))
        finally:
            client.close()

    def do_kill_restart(self) -> None:
        which = self.rng.choice(["cloud", "provider", "agent"])
        if which == "cloud":
            assert self.cloud.proc is not None
            self.cloud.proc.kill9()
            self.cloud.start()
        else:
            proc = self.p.site.provider_proc if which == "provider" else self.p.site.agents["hv01"]
            assert proc is not None
            proc.kill9()
            if self.rng.random() < 0.5:
                self.m.site_up = False      # stays down for a while
                if which == "agent":
                    self.p.site.provider_proc.kill9()  # type: ignore[union-attr]
                else:
                    self.p.site.agents["hv01"].kill9()
            elif which == "provider":
                self.p.site.start_provider(clouds=[{"name": "gold", "hosts": ["hv01"], "sync": True}])
            else:
                self.p.site.start_agent("hv01")

    def do_restart_site(self) -> None:
        self.p.site.start_provider(clouds=[{"name": "gold", "hosts": ["hv01"], "sync": True}])
        self.p.site.start_agent("hv01")
        self.m.site_up = True
        st = self.vm() if self.m.state != S.UNPROTECTED else {}
        if st.get("active_location") == "Primary":
            # a grant queued while the site was down (a cancel) reaches the agent now
            wait_for(lambda: not self.agent_view().get("fenced"), 30, what="the queued grant to reach the agent")

    def do_job_with_cloud_kill(self) -> None:
        """A test failover whose cloud service is killed -9 while it runs, then restarted."""
        res = self.cloud.asr("failover", "test", self.p.vm, *VAULT, "--json")
        job_id = json.loads(res.stdout)["job_id"]
        time.sleep(self.rng.random() * 0.5)   # anywhere in the job: before, during or after materialising
        assert self.cloud.proc is not None
        self.cloud.proc.kill9()
        self.cloud.start()
        assert self.wait_job(job_id)["state"] == "Succeeded"
        [rvm] = self.recovered("test")
        self.disks_equal(rvm, self.m.points[rvm["point_id"]])
        self.m.state = S.TEST_CLEANUP_PENDING

    # ---- invariants ----------------------------------------------------------------------------
    def points_listed(self) -> list[dict[str, Any]]:
        if self.m.state == S.UNPROTECTED:
            return []
        return list(self.cloud.asr_json("point", "list", self.p.vm, *VAULT))

    def check(self, full: bool = False) -> None:
        st = self.vm()
        assert st["protection_state"] == self.m.state, (self.m.steps[-5:], st["protection_state"], self.m.state)
        assert st["allowed_operations"] == allowed(ItemState(st["protection_state"]), site_to_site=False), st
        jobs = self.cloud.asr_json("job", "list", *VAULT)
        assert not [j for j in jobs if j["state"] in ("InProgress", "NotStarted", "Suspended")], jobs[:3]
        # at most one side is writable
        running = [r for r in self.recovered("failover") if r["state"] == "Running"]
        if running:
            assert st["active_location"] == "Recovery", st
            res = self.once()
            assert res.returncode == 44, (res.returncode, res.stderr)
            assert self.agent_view().get("fenced"), "the refused primary must not stay writable"
        listed = self.points_listed()
        unknown = [x["point_id"] for x in listed if x["point_id"] not in self.m.points]
        assert not unknown, (unknown, self.m.steps[-5:])
        if full or len(self.m.steps) % 7 == 0:
            for x in listed:
                assert self.p.verify(x["point_id"])["ok"] is True, x
                for i, ref in enumerate(self.m.points[x["point_id"]]):
                    out = self.p.export(x["point_id"], i, self.root / f"check-{i}.raw")
                    assert compare(out, "raw", ref, "raw").returncode == 0, (x, i, self.m.steps[-5:])


@pytest.mark.parametrize("seed", SEEDS)
def test_random_lifecycle(seed: int, procs: Procs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_FAILOVER_SHUTDOWN_TIMEOUT", "2")
    monkeypatch.setenv("ASR_FAILOVER_GRANT_TIMEOUT", "2")
    monkeypatch.setenv("ASR_MAINTENANCE_SECONDS", "3600")
    r = Run(seed, procs, tmp_path)
    started = time.monotonic()
    r.m.points[r.p.once()["point_id"]] = r.raw()
    for _ in range(STEPS):
        r.step()
    if not r.m.site_up:
        r.do_restart_site()
    r.check(full=True)
    print(json.dumps({"seed": seed, "steps": len(r.m.steps), "seconds": round(time.monotonic() - started, 1),
                      "points_checked": len(r.points_listed()), "sequence": r.m.steps}))
