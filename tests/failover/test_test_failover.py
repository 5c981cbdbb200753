"""Issue 5, must-show 1: test failover of a two-disk VM materialises fixed VHDs equal to the
point (qemu-img compare -f vpc); replication keeps producing points meanwhile; test-complete
leaves no file behind."""

from __future__ import annotations

from pathlib import Path

from tests.failover.fixture import VAULT, asr_job, assert_disks_equal, recovered, vm_state
from tests.harness import Cloud
from tests.replication.fixture import protect


def test_test_failover_and_cleanup(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    first = p.once()["point_id"]
    refs = p.snapshot_raw(tmp_path, "p0")
    p.write(0, 65536 * 3, 4096, 0x21)
    latest = p.once()["point_id"]
    latest_refs = p.snapshot_raw(tmp_path, "p1")

    job = asr_job(p, "failover", "test", p.vm, "--point", first)
    assert job["state"] == "Succeeded" and job["kind"] == "TestFailover"
    [rvm] = recovered(p)
    assert rvm["kind"] == "test" and rvm["state"] == "Running" and rvm["point_id"] == first
    assert rvm["name"] == "vm1-test" and rvm["address"] == "" and rvm["size"]
    assert_disks_equal(rvm, refs)
    st = vm_state(p)
    assert st["protection_state"] == "TestFailoverCleanupPending"
    assert "test-complete" in st["allowed_operations"]

    # a second test is refused, naming what is allowed
    res = cloud.asr("failover", "test", p.vm, *VAULT, check=False)
    assert res.returncode == 42 and "test-complete" in res.stderr

    # replication goes on while the test VM runs
    p.write(1, 0, 4096, 0x5a)
    during = p.once()["point_id"]
    assert during not in (first, latest)
    assert during in [x["point_id"] for x in p.points()]

    vm_dir = Path(rvm["disks"][0]["path"]).parent
    assert vm_dir.exists()
    job = asr_job(p, "failover", "test-complete", p.vm)
    assert job["state"] == "Succeeded"
    assert recovered(p) == []
    assert not vm_dir.exists()
    assert not list(vm_dir.parent.glob("*")), "test-complete left files behind"
    assert vm_state(p)["protection_state"] == "Protected"

    # a test into a network gets an address from its subnet (the first four are reserved)
    cloud.asr("network", "create", "recnet", *VAULT, "--region", "japaneast", "--address-space", "10.8.0.0/16",
              "--subnet", "apps=10.8.1.0/24")
    asr_job(p, "failover", "test", p.vm, "--network", "recnet")
    [rvm] = recovered(p)
    assert (rvm["network"], rvm["subnet"], rvm["address"]) == ("recnet", "apps", "10.8.1.4")
    assert rvm["point_id"] == during
    asr_job(p, "failover", "test-complete", p.vm)
    assert recovered(p) == [] and latest_refs
