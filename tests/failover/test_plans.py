"""Issue 5, must-show 5: a three-group recovery plan with script and manual actions runs the
groups in order, waits (Suspended) at the manual action, and finishes after 'asr job resume';
a failing script fails the job with the script's output, and what the job made is removed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from asrclock import from_iso
from tests.controlplane.sitefix import create_vm, wait_vms
from tests.failover.fixture import VAULT, recovered
from tests.harness import Cloud, run, wait_for
from tests.replication.fixture import protect


def test_three_group_plan(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    p.once()
    p.site.agents["hv01"].stop()
    ids = {n: create_vm(p.site, "hv01", n)["vm_id"] for n in ("vm2", "vm3")}
    p.site.start_agent("hv01")
    wait_vms(cloud, {"vm1", "vm2", "vm3"}, timeout=60)
    for name, vm_id in ids.items():
        assert cloud.asr_json("vm", "protect", name, *VAULT, "--wait")["state"] == "Succeeded"
        settings = p.site.root / "hv01" / "replication" / f"{vm_id}.json"
        wait_for(settings.exists, 30, what=f"replication settings of {name}")
        res = run([sys.executable, "-m", "agent.replication", "once", vm_id, "--config", str(p.config)],
                  env=cloud.env(), timeout=300)
        assert res.returncode == 0, res.stderr

    log = tmp_path / "order.log"
    script = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n'); print('ran', "
              "sys.argv[2])", str(log)]
    cloud.asr("plan", "create", "app", "--vm", "vm1", *VAULT)
    cloud.asr("plan", "add-group", "app", "--vm", "vm2", *VAULT)
    cloud.asr("plan", "add-group", "app", "--vm", "vm3", *VAULT)
    cloud.asr("plan", "add-action", "app", "--group", "1", "--when", "after", "--action-name", "db-ready",
              "--script", script[0], *[f"--arg={a}" for a in [*script[1:], "after-1"]], *VAULT)
    cloud.asr("plan", "add-action", "app", "--group", "3", "--when", "before", "--action-name", "check-dns",
              "--manual", "Point the DNS at the recovered web tier, then resume", *VAULT)
    plan = cloud.asr_json("plan", "show", "app", *VAULT)
    assert [g["vms"] for g in plan["groups"]] == [["vm1"], ["vm2"], ["vm3"]]

    job_id = cloud.asr_json("failover", "test", "--plan", "app", *VAULT)["job_id"]
    job = wait_for(lambda: (lambda j: j if j["state"] == "Suspended" else None)(
        cloud.asr_json("job", "show", job_id, *VAULT)), 120, what="the job to wait at the manual action")
    made = {r["source_name"] for r in recovered(p) if r["state"] == "Running"}
    assert made == {"vm1", "vm2"}                      # group 3 waits behind the manual action
    assert log.read_text() == "after-1\n"
    waiting = [t for t in job["tasks"] if t["state"] == "Suspended"]
    assert len(waiting) == 1 and "DNS" in waiting[0]["output"]

    done = cloud.asr_json("job", "resume", job_id, *VAULT, "--wait")
    assert done["state"] == "Succeeded", done
    assert {r["source_name"] for r in recovered(p)} == {"vm1", "vm2", "vm3"}
    tasks = done["tasks"]
    names = [t["name"] for t in tasks]
    assert names == ["Group 1: fail over vm1", "Group 1: script action db-ready (after)", "Group 2: fail over vm2",
                     "Group 3: manual action check-dns (before)", "Group 3: fail over vm3"]
    ends = [from_iso(t["ended_at"]) for t in tasks]
    starts = [from_iso(t["started_at"]) for t in tasks]
    assert all(starts[i + 1] >= ends[i] for i in range(len(tasks) - 1)), json.dumps(tasks, indent=1)
    assert "ran after-1" in tasks[1]["output"]

    assert cloud.asr_json("failover", "test-complete", "--plan", "app", *VAULT, "--wait")["state"] == "Succeeded"
    wait_for(lambda: recovered(p) == [], 30, what="test VMs removed")

    # a failing script fails the job with its output; what the job made is removed
    cloud.asr("plan", "add-action", "app", "--group", "2", "--when", "after", "--action-name", "smoke-test",
              "--script", sys.executable, "--arg=-c", "--arg=print('smoke test: web tier down'); exit(3)",
              *VAULT)
    res = cloud.asr("failover", "test", "--plan", "app", *VAULT, "--wait", "--json", check=False)
    assert res.returncode != 0
    job = cloud.asr_json("job", "list", *VAULT)
    failed = next(j for j in job if j["kind"] == "TestFailover" and j["state"] == "Failed")
    assert "exited with 3" in failed["error"]["message"]
    bad = next(t for t in failed["tasks"] if t["state"] == "Failed")
    assert "web tier down" in bad["output"]
    wait_for(lambda: recovered(p) == [], 30, what="the failed job's VMs removed")
    states = {v["vm"]["name"]: v["protection_state"] for v in cloud.asr_json("vm", "list", *VAULT)}
    assert states == {"vm1": "Protected", "vm2": "Protected", "vm3": "Protected"}
