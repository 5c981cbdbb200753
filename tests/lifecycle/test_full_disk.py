"""Issue 10, must-show 5 (cloud side): a test failover onto a full disk fails with the
out-of-space error (ASR-0061, its cause and action), not a BufferError or a traceback, leaves
no half-made VM, and the item is back in Protected; freeing space lets it succeed.

The recovered VMs of a local-directory storage account live in LOCATION/recovered: the test
mounts a 1 MiB tmpfs there (root only; CI runs as root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.failover.fixture import VAULT, asr_job, recovered, vm_state
from tests.harness import Cloud
from tests.replication.fixture import protect


@pytest.fixture
def small_mount(tmp_path: Path) -> Iterator[list[Path]]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted: list[Path] = []
    try:
        yield mounted
    finally:
        for m in mounted:
            subprocess.run(["umount", "-l", str(m)], check=False)


def test_test_failover_on_a_full_disk_reports_out_of_space(cloud: Cloud, tmp_path: Path,
                                                          small_mount: list[Path]) -> None:
    p = protect(cloud, tmp_path)
    p.once()
    location = Path(cloud.asr_json("storage", "list", *VAULT)[0]["location"])
    target = location / "recovered"
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(target)], check=True)
    small_mount.append(target)

    res = cloud.asr("failover", "test", p.vm, *VAULT, "--wait", "--timeout", "120", "--json", check=False)
    assert res.returncode == 90, (res.returncode, res.stderr)
    job = cloud.asr_json("job", "list", *VAULT)[0]
    assert job["kind"] == "TestFailover" and job["state"] == "Failed", job
    failed = [t for t in job["tasks"] if t["state"] == "Failed"]
    assert failed and failed[0]["error"]["code"] == "ASR-0061", failed
    assert "space" in (failed[0]["error"]["message"] + " ".join(failed[0]["error"].get("possible_causes", [])))
    assert "BufferError" not in res.stderr + str(job) and "Traceback" not in res.stderr
    assert vm_state(p)["protection_state"] == "Protected"
    assert not [r for r in recovered(p) if r["state"] != "Deleting"]

    subprocess.run(["umount", "-l", str(target)], check=True)
    small_mount.clear()
    assert asr_job(p, "failover", "test", p.vm)["state"] == "Succeeded"
