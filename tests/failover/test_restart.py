"""Issue 5, must-show 7: cloudsvc killed in the middle of materialising a failover: the
half-made VM is never reported as running, and the job resumes after the restart and ends
with the VM equal to its point and no partial file left."""

from __future__ import annotations

from pathlib import Path

from tests.failover.fixture import VAULT, assert_disks_equal, recovered
from tests.harness import Cloud, pause_fault, wait_for
from tests.replication.fixture import protect


def test_failover_resumes_after_cloudsvc_is_killed(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    point = p.once()["point_id"]
    refs = p.snapshot_raw(tmp_path, "p0")
    # a fault pauses the materialisation inside a read of the store (the failover first checks a
    # tree node and a frame of each of the two disks: 4 reads), so the kill lands in the middle
    # of it, and the fired file proves it did
    fault = pause_fault(tmp_path, after=4)
    paused = cloud.restart("cloudsvc-paused", **fault.env)
    job_id = cloud.asr_json("failover", "unplanned", p.vm, *VAULT)["job_id"]
    wait_for(fault.fired.exists, 60, what="materialisation paused inside a read of the store")
    rvm = wait_for(lambda: [r for r in recovered(p) if r["state"] == "Creating"], 60, what="a VM being made")[0]
    vm_dir = Path(str(cloud.data_dir)).rglob(rvm["id"])
    paused.kill9()
    # as the dead service left it: the VM is Creating, never Running
    rows = [r for r in cloud.db_rows("recovered_vms") if r[0] == rvm["id"]]
    assert rows and rows[0][6] == "Creating", rows
    assert list(vm_dir)

    cloud.start()
    job = cloud.asr_json("job", "wait", job_id, *VAULT)
    assert job["state"] == "Succeeded", job
    [done] = recovered(p)
    assert done["id"] == rvm["id"] and done["state"] == "Running" and done["point_id"] == point
    assert_disks_equal(done, refs)
    assert not list(Path(done["disks"][0]["path"]).parent.glob("*.partial"))
