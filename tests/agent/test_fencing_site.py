"""Fencing end to end: a primary that comes back after an unplanned failover is stale. The
vault refuses it (CheckEpoch at the agent's start, BeginCycle), the agent fences the VM (off,
not startable, not replicated), and only failback makes it the active side again.

These tests need the cloud's side of fencing (epochs advanced by failover, Fenced refusals,
EnableReplication/Failback carrying the epoch); test_planned_failover_fences_the_primary's
first half also holds without it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.hypervisor import LocalHypervisor
from tests.controlplane.sitefix import agent_vm
from tests.failover.fixture import asr_job, compare, vm_state
from tests.harness import Cloud, Procs, wait_for
from tests.replication.fixture import CLOUDS, Protected, protect


def fence_warnings(log_text: str) -> list[dict[str, Any]]:
    out = []
    for line in log_text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("level") == "warning" and doc.get("code") == "ASR-0044":
            out.append(doc)
    return out


def assert_fenced(p: Protected, hv: LocalHypervisor, reason: str) -> None:
    marker = wait_for(lambda: hv.fenced(p.vm), 60, what="the agent to fence the VM")
    assert reason in marker["reason"], marker
    wait_for(lambda: hv.get(p.vm).power_state == "Off", 30, what="the fenced VM powered off")
    res = agent_vm(p.site, "hv01", "start", p.vm)
    assert res.returncode == 44 and "ASR-0044" in res.stderr and "fail back" in res.stderr.lower(), res.stderr
    res = agent_vm(p.site, "hv01", "write", p.vm, "--disk", "0", "--offset", "0", "--length", "1", "--pattern", "1")
    assert res.returncode == 44, res.stderr
    assert "FENCED" in agent_vm(p.site, "hv01", "show", p.vm).stdout
    points = len(p.points())
    once = p.once(check=False)
    assert once["returncode"] == 44 and "ASR-0044" in once["stderr"], once
    assert len(p.points()) == points


def test_a_primary_back_after_unplanned_failover_is_fenced_until_failback(procs: Procs, tmp_path: Path) -> None:
    cloud = Cloud(procs, tmp_path / "cloud").start()
    p = protect(cloud, tmp_path)
    p.once()
    acked = p.once()["point_id"]
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    settings = p.site.root / "hv01" / "replication" / f"{p.vm_id}.json"
    epoch_before = json.loads(settings.read_text()).get("epoch", 1)
    for proc in [*p.site.agents.values(), p.site.provider_proc]:
        assert proc is not None
        proc.kill9()
    job = asr_job(p, "failover", "unplanned", p.vm)
    assert job["state"] == "Succeeded", job
    assert asr_job(p, "failover", "commit", p.vm)["state"] == "Succeeded"

    # the site comes back: the agent asks the vault at start and learns it is stale
    p.site.start_provider(clouds=CLOUDS)
    agent = p.site.start_agent("hv01")
    assert_fenced(p, hv, "failed over")
    wait_for(lambda: fence_warnings(agent.text()), 30, what="the agent's ASR-0044 warning")
    # removing the marker by hand does not make it the active side: the vault refuses the session
    (p.site.root / "hv01" / "vms" / ".state" / p.vm / "fenced.json").unlink()
    res = p.once(check=False)
    assert res["returncode"] == 44, res
    assert hv.fenced(p.vm) is not None
    assert [x["point_id"] for x in p.points()][-1] == acked    # nothing it sent became a point

    # failback makes this host the active side again, with the vault's new epoch
    job = asr_job(p, "failover", "planned", p.vm, "--direction", "to-primary")
    assert job["state"] == "Succeeded", job
    assert hv.fenced(p.vm) is None
    assert json.loads(settings.read_text())["epoch"] > epoch_before
    wait_for(lambda: hv.get(p.vm).power_state == "Running", 30, what="the VM started on premises")
    assert asr_job(p, "failover", "commit", p.vm)["state"] == "Succeeded"
    assert vm_state(p)["protection_state"] == "Protected"
    p.write(0, 0, 4096, 0x61)
    res = p.once()
    for i, (img, fmt) in enumerate(p.disks):
        out = p.export(res["point_id"], i, tmp_path / f"after-{i}.raw")
        assert compare(out, "raw", img, fmt).returncode == 0
    hv.close()


def test_planned_failover_fences_the_primary_until_cancel_reprotects(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    p.once()
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    job = asr_job(p, "failover", "planned", p.vm)
    assert job["state"] == "Succeeded", job
    # the final cycle's acknowledgement fenced the primary (this half needs no cloud support)
    assert_fenced(p, hv, "failed over: planned")
    agent = p.site.agents["hv01"]
    assert [w["reason"] for w in fence_warnings(agent.text())] == ["failed over: planned"]

    # cancel re-protects the primary: EnableReplication grants the new epoch and clears the fence
    job = asr_job(p, "failover", "cancel", p.vm)
    assert job["state"] == "Succeeded", job
    assert hv.fenced(p.vm) is None
    wait_for(lambda: hv.get(p.vm).power_state == "Running", 30, what="the primary running again")
    p.write(1, 0, 4096, 0x44)
    assert p.once()["point_id"]
    hv.close()
