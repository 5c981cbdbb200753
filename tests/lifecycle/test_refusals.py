"""Issue 10, found 8 and must-show 5: refusals come before any job exists, with their own
codes: a point that does not exist (ASR-0040), a test-failover network of another region
(ASR-0012); and the first full-disk failure of an upload is ASR-0061 at the agent, never
ASR-0001 or a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.failover.fixture import VAULT, vm_state
from tests.harness import Cloud, run
from tests.replication.fixture import protect


def _jobs(cloud: Cloud) -> list[str]:
    return [j["id"] for j in cloud.asr_json("job", "list", *VAULT)]


def test_bad_point_and_foreign_network_are_refused_before_any_job(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    p.once()
    cloud.asr("network", "create", "west-net", *VAULT, "--region", "japanwest", "--address-space", "10.9.0.0/16",
              "--subnet", "default=10.9.1.0/24")
    before = _jobs(cloud)
    res = cloud.asr("failover", "test", p.vm, *VAULT, "--point", "rp-bogus", check=False)
    assert res.returncode == 40 and "rp-bogus" in res.stderr and "asr point list" in res.stderr, res.stderr
    res = cloud.asr("failover", "unplanned", p.vm, *VAULT, "--point", "rp-bogus", check=False)
    assert res.returncode == 40, res.stderr
    res = cloud.asr("failover", "test", p.vm, *VAULT, "--network", "west-net", check=False)
    assert res.returncode == 12 and "japanwest" in res.stderr and "japaneast" in res.stderr, res.stderr
    assert _jobs(cloud) == before
    assert vm_state(p)["protection_state"] == "Protected"


def test_first_full_disk_failure_of_an_upload_is_asr_0061(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps([{"method": "put", "prefix": "packs/", "action": "error", "errno": 28,
                                   "times": 100}]))
    cloud.restart("cloudsvc-full", ASR_FAULTS=str(faults))
    res = run([sys.executable, "-m", "agent.replication", "once", p.vm_id, "--config", str(p.config)],
              env=cloud.env(), timeout=300)
    assert res.returncode == 61, (res.returncode, res.stderr[-2000:])
    assert "ASR-0061" in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert p.points() == []
    # space is back: the next cycle ships the copy
    cloud.restart()
    assert p.once()["point_id"]
