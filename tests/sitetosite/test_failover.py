"""Issue 11, must-shows 2, 3 and 4: failover of a VM protected site to site, through real
daemons — one cloud service, two providers, three agents (hv01 on site A; hv11 holding
replicas and hv12 on site B).

- test failover while replication continues: a test VM on hv11, on a copy of the point, its
  NICs on the network chosen; a new point still reaches the replica; test-complete leaves no
  VM and no file behind;
- planned failover after fresh writes loses nothing: the VM runs on hv11 *on the replica
  disks* (no copy), NIC on the mapped network corp-dr, the disks equal the source's after
  shutdown; writes made there come back by failback shipping only the changed blocks
  (counted), straight from hv11; after commit replication resumes incrementally;
- unplanned failover with the primary host down: the VM runs on hv11 from the latest point;
  the primary, back, is fenced (it may not start its stale copy, and its cycles are refused
  by the recovery host); failback then brings the recovery site's writes home as deltas.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from asrerrors import Fenced
from tests.controlplane.sitefix import agent_vm
from tests.harness import Cloud, run, wait_for
from tests.replication.fixture import MiB
from tests.sitetosite.fixture import TwoSites

KiB = 1024


def _received(job: dict[str, object]) -> tuple[int, int]:
    out = str(job["tasks"][-1]["output"])  # type: ignore[index]
    m = re.search(r"received (\d+) differing blocks \((\d+) bytes\)", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def test_site_to_site_failovers(cloud: Cloud, tmp_path: Path) -> None:
    s = TwoSites(cloud, tmp_path)
    s.protect()
    assert s.state()["initial_replication_progress"] == 0.0
    first = s.once()
    assert first["modes"] == ["initial", "initial"], first
    assert s.state()["initial_replication_progress"] == 1.0   # it said 0% whatever the replica held
    at_first = s.raw("p1")
    wait_for(lambda: s.applied() == first["point_id"], 60, what="replica disks at the first point")

    # ---- 3. test failover while replication continues ------------------------------------------------
    job = s.job("failover", "test", "web01", "--network", "lab")
    assert job["state"] == "Succeeded", job
    test_vm = s.hv11.get("web01-test")
    assert test_vm.power_state == "Running" and [n.network for n in test_vm.nics] == ["lab"]
    test_dir = s.replica_dir / s.vm_id / "test"
    assert all(str(test_dir) in d.path for d in test_vm.disks)      # its own copy, not the replica's disks
    s.equal([d.path for d in test_vm.disks], "vhdx", at_first)
    assert s.state()["protection_state"] == "TestFailoverCleanupPending"
    # the primary keeps replicating; the test VM writes on its own copy
    s.write(s.hv01, "web01", 0, 2 * MiB, 128 * KiB, 0x42)
    s.write(s.hv11, "web01-test", 1, 0, 64 * KiB, 0x99)
    second = s.once()
    assert second["modes"] == ["incremental", "incremental"] and second["blocks_changed"] == 2, second
    wait_for(lambda: s.applied() == second["point_id"], 60, what="replica disks at the second point")
    s.equal([str(s.replica_dir / s.vm_id / "disks" / f"disk{i}.vhdx") for i in range(2)], "vhdx", s.raw("p2"))
    job = s.job("failover", "test-complete", "web01")
    assert job["state"] == "Succeeded", job
    assert [vm.name for vm in s.hv11.list()] == [] and not test_dir.exists()
    assert s.state()["protection_state"] == "Protected"
    # a chosen earlier point (kept on hv11) equals the source as it was then
    job = s.job("failover", "test", "web01", "--point", first["point_id"])
    assert job["state"] == "Succeeded", job
    s.equal([d.path for d in s.hv11.get("web01-test").disks], "vhdx", at_first)
    assert [n.network for n in s.hv11.get("web01-test").nics] == [""]      # no network chosen: none
    assert s.job("failover", "test-complete", "web01")["state"] == "Succeeded"

    # ---- 2. planned failover after fresh writes: nothing lost -------------------------------------------
    s.write(s.hv01, "web01", 0, 5 * MiB, 64 * KiB, 0x51)
    s.write(s.hv01, "web01", 1, 3 * MiB, 4 * KiB, 0x52)
    job = s.job("failover", "planned", "web01")
    assert job["state"] == "Succeeded", job
    print("planned failover:", [t["output"] for t in job["tasks"]])
    assert "on the replica disks (no copy)" in job["tasks"][-1]["output"]
    after_shutdown = s.raw("after-shutdown")
    vm = s.hv11.get("web01")
    assert vm.power_state == "Running" and [n.network for n in vm.nics] == ["corp-dr"]
    s.equal([d.path for d in vm.disks], "vhdx", after_shutdown)      # zero data loss
    assert s.hv01.get("web01").power_state == "Off"
    st = s.state()
    assert st["protection_state"] == "FailoverCommitPending" and st["active_location"] == "Recovery"
    table = cloud.asr("vm", "show", "web01", "--vault", "contoso").stdout
    assert "recovery host hv11 (failed over" in table, table
    assert s.job("failover", "commit", "web01")["state"] == "Succeeded"

    # the VM runs on hv11 and writes: 3 blocks on disk 0, 1 on disk 1
    s.write(s.hv11, "web01", 0, 1 * MiB, 192 * KiB, 0x77)
    s.write(s.hv11, "web01", 1, 6 * MiB, 4 * KiB, 0x78)
    job = s.job("failover", "planned", "web01", "--direction", "to-primary")
    assert job["state"] == "Succeeded" and job["kind"] == "Failback", job
    blocks, nbytes = _received(job)
    assert (blocks, nbytes) == (4, 4 * 64 * KiB), job["tasks"][-1]["output"]
    s.hv11.close()
    s.equal([d.path for d in s.hv11.get("web01").disks], "vhdx", s.raw("after-failback"))
    assert s.hv01.get("web01").power_state == "Running"
    assert s.state()["protection_state"] == "FailbackCommitPending"
    assert s.job("failover", "commit", "web01")["state"] == "Succeeded"
    assert [v.name for v in s.hv11.list()] == []
    st = s.state()
    assert st["protection_state"] == "Protected" and st["active_location"] == "Primary"
    # replication resumes from a consistent base: only the failed-back blocks travel
    third = s.once()
    assert third["modes"] == ["incremental", "incremental"] and third["blocks_changed"] == 4, third
    wait_for(lambda: s.applied() == third["point_id"], 60, what="replica disks redone at the third point")
    s.equal([str(s.replica_dir / s.vm_id / "disks" / f"disk{i}.vhdx") for i in range(2)], "vhdx",
            s.raw("after-failback"))

    # ---- 4. unplanned failover with the primary host down -----------------------------------------------
    s.write(s.hv01, "web01", 0, 7 * MiB, 64 * KiB, 0x61)    # never shipped: the site is lost
    s.a.agents["hv01"].kill9()
    job = s.job("failover", "unplanned", "web01")
    assert job["state"] == "Succeeded", job
    vm = s.hv11.get("web01")
    assert vm.power_state == "Running" and [n.network for n in vm.nics] == ["corp-dr"]
    # the latest point: what hv01 held at the third point (its later write is lost with the site)
    s.equal([d.path for d in vm.disks], "vhdx", _at(tmp_path, "after-failback"))
    # the primary comes back: its copy is fenced (its epoch is stale)
    s.a.start_agent("hv01")
    # the marker is written first (no guest write lands after it), then the VM powers off
    wait_for(lambda: s.hv01.fenced("web01") is not None and s.hv01.get("web01").power_state == "Off", 60,
             what="hv01 to fence its stale copy and power it off")
    with pytest.raises(Fenced):
        s.hv01.start("web01")
    assert s.job("failover", "commit", "web01")["state"] == "Succeeded"
    s.write(s.hv11, "web01", 1, 2 * MiB, 64 * KiB, 0x33)
    job = s.job("failover", "planned", "web01", "--direction", "to-primary")
    assert job["state"] == "Succeeded", job
    blocks, _ = _received(job)
    assert blocks == 2, job["tasks"][-1]["output"]    # hv11's write, and hv01's never-shipped one undone
    assert s.hv01.fenced("web01") is None and s.hv01.get("web01").power_state == "Running"
    res = agent_vm(s.a, "hv01", "show", "web01", "--json")
    assert '"Running"' in res.stdout
    # the cloud carried commands and metadata only: no chunk of this VM anywhere in its data
    assert cloud.database_url or (cloud.data_dir / "metadata.db").exists()   # the metadata is somewhere
    assert [p for p in cloud.data_dir.rglob("*") if p.is_file() and "packs" in p.parts] == []
    assert cloud.db_rows("recovery_points") == [] and cloud.db_rows("recovered_vms") == []


def _at(root: Path, name: str) -> list[Path]:
    return [root / f"{name}-disk{i}.raw" for i in range(2)]


def test_a_recovery_plan_mixes_site_to_site_and_vault_vms(cloud: Cloud, tmp_path: Path) -> None:
    """One plan: web01 (site to site, to hv11) and app01 (to the vault's storage). Test
    failover and cleanup, then an unplanned failover and its cancel, act on both, each where
    its replica is; after the cancel the primary ships to the recovery host again,
    incrementally, onto the re-armed replica."""
    s = TwoSites(cloud, tmp_path, os_size=8 * MiB, data_size=4 * MiB)
    s.protect()
    s.protect_vault_vm()
    first = s.once()
    wait_for(lambda: s.applied() == first["point_id"], 60, what="replica disks at the first point")
    s.asr("plan", "create", "drill", "--vm", "web01", "--vm", "app01")

    job = s.job("failover", "test", "--plan", "drill")
    assert job["state"] == "Succeeded", job
    assert [v.name for v in s.hv11.list()] == ["web01-test"]
    assert [(r["name"], r["kind"]) for r in s.asr("recovered-vm", "list")] == [("app01-test", "test")]
    assert s.job("failover", "test-complete", "--plan", "drill")["state"] == "Succeeded"
    assert s.hv11.list() == [] and s.asr("recovered-vm", "list") == []

    job = s.job("failover", "unplanned", "--plan", "drill")
    assert job["state"] == "Succeeded", job
    assert [v.name for v in s.hv11.list()] == ["web01"] and s.hv11.get("web01").power_state == "Running"
    assert [(r["name"], r["kind"]) for r in s.asr("recovered-vm", "list")] == [("app01", "failover")]
    # web01's copy on hv01 is stale now: a cycle from it is refused by the recovery host
    res = run_once_refused(s)
    assert "ASR-0044" in res, res

    job = s.job("failover", "cancel", "--plan", "drill")
    assert job["state"] == "Succeeded", job
    assert s.hv11.list() == [] and s.asr("recovered-vm", "list") == []
    wait_for(lambda: s.hv01.fenced("web01") is None and s.hv01.get("web01").power_state == "Running", 60,
             what="web01 granted back and started on hv01")
    assert s.state()["protection_state"] == "Protected"
    s.write(s.hv01, "web01", 1, 0, 64 * KiB, 0x44)
    again = s.once()
    assert again["modes"] == ["incremental", "incremental"], again
    wait_for(lambda: s.applied() == again["point_id"], 60, what="the re-armed replica redone at the new point")
    s.equal([str(s.replica_dir / s.vm_id / "disks" / f"disk{i}.vhdx") for i in range(2)], "vhdx", s.raw("after"))


def run_once_refused(s: TwoSites) -> str:
    res = run([sys.executable, "-m", "agent.replication", "once", s.vm_id, "--config",
               str(s.a.root / "hv01.toml")], env=s.cloud.env(), timeout=120)
    assert res.returncode != 0, res.stdout
    return res.stderr + res.stdout


def test_vault_teardown_releases_the_replicas_on_recovery_hosts(cloud: Cloud, tmp_path: Path) -> None:
    """`asr vault delete --force` tells the recovery host to let the replica and its data go
    (it used to leave them there, for a pairing that no longer exists)."""
    s = TwoSites(cloud, tmp_path, os_size=8 * MiB, data_size=4 * MiB)
    s.protect()
    s.once()
    assert (s.replica_dir / s.vm_id / "pairing.json").exists()
    doc = cloud.asr_json("vault", "delete", "contoso", "--force", "--wait", "--timeout", "240")
    assert doc["deleted"] is True, doc      # the job went with the vault: its effect is the evidence
    assert not (s.replica_dir / s.vm_id).exists()
