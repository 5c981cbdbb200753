"""Issue 5, must-show 2 and 4: planned failover under a running workload loses nothing (the
recovered disks equal the source disks after shutdown); after writes into the recovered VM,
failback makes the on-premises disks equal the recovered ones while shipping about the bytes
changed, not the disk size; forward replication then resumes without a full copy."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from agent.hypervisor import LocalHypervisor
from tests.controlplane.sitefix import agent_vm
from tests.failover.fixture import asr_job, assert_disks_equal, compare, recovered, vm_state
from tests.harness import BIN, Cloud, wait_for
from tests.replication.fixture import MiB, protect


def test_planned_failover_commit_failback(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path, os_size=16 * MiB, data_size=8 * MiB)
    p.once()
    # a guest workload runs until the failover shuts the VM down
    workload = cloud.procs.start("workload", [str(BIN / "asr-agent"), "vm", "workload", p.vm, "--config",
                                              str(p.config), "--rate", "2", "--duration", "120"], env=cloud.env())
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    wait_for(lambda: any(t["dirty_blocks"] for t in hv.tracking_state(p.vm)), 30, what="workload writes")
    job = asr_job(p, "failover", "planned", p.vm)
    assert job["state"] == "Succeeded" and job["kind"] == "PlannedFailover", job
    wait_for(lambda: workload.popen.poll() is not None, 30, what="the workload to stop with the VM")
    assert "not running" in workload.text(), workload.text()   # it was writing when the VM stopped
    after_shutdown = p.snapshot_raw(tmp_path, "after-shutdown")
    [rvm] = recovered(p)
    assert rvm["kind"] == "failover" and rvm["state"] == "Running"
    assert_disks_equal(rvm, after_shutdown)          # zero data loss
    st = vm_state(p)
    assert st["protection_state"] == "FailoverCommitPending"
    assert sorted(st["allowed_operations"]) == ["cancel", "change-point", "commit"]
    assert st["active_location"] == "Recovery"
    assert '"Off"' in agent_vm(p.site, "hv01", "show", p.vm, "--json").stdout

    assert asr_job(p, "failover", "commit", p.vm)["state"] == "Succeeded"
    assert vm_state(p)["protection_state"] == "FailoverCommitted"

    # the recovered VM runs in the vault and writes: 3 blocks on disk 0, 1 on disk 1
    os_vhd, data_vhd = (d["path"] for d in sorted(rvm["disks"], key=lambda d: d["index"]))
    for path, cmd in ((os_vhd, "write -P 0x77 1M 192k"), (data_vhd, "write -P 0x78 6M 4k")):
        r = subprocess.run(["qemu-io", "-f", "vpc", "-c", cmd, path], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    changed = 3 * 65536 + 65536

    job = asr_job(p, "failover", "planned", p.vm, "--direction", "to-primary")
    assert job["state"] == "Succeeded" and job["kind"] == "Failback", job
    out = job["tasks"][-1]["output"]
    print("failback:", out)
    received = int(re.search(r"\((\d+) bytes\)", out).group(1))   # type: ignore[union-attr]
    disk_bytes = (16 + 8) * MiB
    assert received == changed, out            # exactly the changed blocks travelled...
    assert received < disk_bytes / 20          # ...not the disks
    for (img, fmt), path in zip(p.disks, (os_vhd, data_vhd), strict=True):
        r = compare(img, fmt, path, "vpc")
        assert r.returncode == 0, (img, r.stdout, r.stderr)
    assert '"Running"' in agent_vm(p.site, "hv01", "show", p.vm, "--json").stdout
    st = vm_state(p)
    assert st["protection_state"] == "FailbackCommitPending" and st["allowed_operations"] == ["commit"]

    assert asr_job(p, "failover", "commit", p.vm)["state"] == "Succeeded"
    assert recovered(p) == []
    assert not Path(os_vhd).exists()
    st = vm_state(p)
    assert st["protection_state"] == "Protected" and st["active_location"] == "Primary"

    # forward replication resumes from a consistent base: only the failed-back blocks travel
    res = p.once()
    assert res["blocks_changed"] == 4, res
    for i, (img, fmt) in enumerate(p.disks):
        out_raw = p.export("latest", i, tmp_path / f"after-failback-{i}.raw")
        assert compare(out_raw, "raw", img, fmt).returncode == 0
