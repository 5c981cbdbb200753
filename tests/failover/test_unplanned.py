"""Issue 5, must-show 3: with the agent and the provider killed, unplanned failover (trying
to shut the source down first, which the dead site cannot do) recovers the VM equal to the
latest acknowledged point; then commit."""

from __future__ import annotations

from pathlib import Path

from tests.failover.fixture import asr_job, assert_disks_equal, recovered, vm_state
from tests.harness import Cloud
from tests.replication.fixture import protect


def test_unplanned_failover_with_the_site_down(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    p.once()
    p.write(0, 65536 * 7, 8192, 0x3c)
    acked = p.once()["point_id"]
    refs = p.snapshot_raw(tmp_path, "acked")
    p.write(1, 0, 65536, 0x4d)                      # never replicated: lost with the site
    for proc in [*p.site.agents.values(), p.site.provider_proc]:
        assert proc is not None
        proc.kill9()

    job = asr_job(p, "failover", "unplanned", p.vm, "--shutdown-source")
    assert job["state"] == "Succeeded", job
    assert "did not answer" in job["tasks"][0]["output"]
    [rvm] = recovered(p)
    assert rvm["point_id"] == acked and rvm["state"] == "Running"
    assert_disks_equal(rvm, refs)
    assert vm_state(p)["protection_state"] == "FailoverCommitPending"
    assert asr_job(p, "failover", "commit", p.vm)["state"] == "Succeeded"
    assert vm_state(p)["protection_state"] == "FailoverCommitted"
