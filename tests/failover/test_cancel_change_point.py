"""Issue 5: before commit, `change-point` re-makes the recovered VM from an older point (its
disks then equal that point's export, judged by qemu-img) and `cancel` returns the VM to
Protected, removes the recovered VM and its files, and starts the primary VM again. `asr vm
show` shows the recovered VM meanwhile: name, state, size, disk files and address."""

from __future__ import annotations

import json
from pathlib import Path

from tests.controlplane.sitefix import agent_vm
from tests.failover.fixture import VAULT, asr_job, compare, recovered, vm_state
from tests.harness import Cloud, wait_for
from tests.replication.fixture import protect


def power(p: object) -> str:
    res = agent_vm(p.site, "hv01", "show", p.vm, "--json")  # type: ignore[attr-defined]
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["power_state"])


def test_change_point_then_cancel(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    older = p.once()["point_id"]
    p.write(0, 65536 * 5, 65536, 0x42)
    p.write(1, 4096, 8192, 0x43)
    p.once()
    cloud.asr("network", "create", "recnet", *VAULT, "--region", "japaneast", "--address-space", "10.9.0.0/16",
              "--subnet", "apps=10.9.2.0/24")

    job = asr_job(p, "failover", "planned", p.vm, "--network", "recnet")
    assert job["state"] == "Succeeded", job
    assert power(p) == "Off"
    [first] = recovered(p)
    st = vm_state(p)
    assert st["protection_state"] == "FailoverCommitPending"
    [shown] = st["recovered_vms"]
    assert (shown["name"], shown["state"], shown["kind"]) == ("vm1", "Running", "failover")
    assert shown["size"] and (shown["network"], shown["subnet"], shown["address"]) == ("recnet", "apps", "10.9.2.4")
    assert [d["path"] for d in shown["disks"]] == [d["path"] for d in first["disks"]]
    assert all(Path(d["path"]).is_absolute() and Path(d["path"]).exists() for d in shown["disks"])
    text = cloud.asr("vm", "show", p.vm, *VAULT).stdout
    assert "recovered VM: vm1 (failover, Running)" in text and "10.9.2.4 in recnet/apps" in text, text
    assert shown["disks"][0]["path"] in text

    # change-point: the recovered VM is re-made from the older point; the previous one is removed
    job = asr_job(p, "failover", "change-point", p.vm, "--point", older)
    assert job["state"] == "Succeeded" and job["kind"] == "ChangeRecoveryPoint", job
    [rvm] = recovered(p)
    assert rvm["id"] != first["id"] and rvm["point_id"] == older and rvm["state"] == "Running"
    assert not Path(first["disks"][0]["path"]).parent.exists()
    for d in sorted(rvm["disks"], key=lambda d: d["index"]):
        ref = p.export(older, d["index"], tmp_path / f"older-{d['index']}.raw")
        r = compare(d["path"], "vpc", ref, "raw")
        assert r.returncode == 0, (d, r.stdout, r.stderr)
    st = vm_state(p)
    assert st["protection_state"] == "FailoverCommitPending"
    assert [r["point_id"] for r in st["recovered_vms"]] == [older]

    # cancel: back to Protected, the recovered VM and its files gone, the primary runs again
    job = asr_job(p, "failover", "cancel", p.vm)
    assert job["state"] == "Succeeded" and job["kind"] == "CancelFailover", job
    assert recovered(p) == []
    assert not Path(rvm["disks"][0]["path"]).parent.exists()
    st = vm_state(p)
    assert st["protection_state"] == "Protected" and st["active_location"] == "Primary"
    assert st.get("recovered_vms", []) == []
    wait_for(lambda: power(p) == "Running", 30, what="the primary VM to start again")
    # protection goes on: the next cycle succeeds from the primary
    p.write(0, 0, 4096, 0x44)
    assert p.once()["point_id"]
