"""`asr-provider vm protect --nic N` counts NICs from 0, as `asr-agent vm show` and the
protection rules do (the wire carries N + 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.controlplane.sitefix import agent_vm, create_vm, start_site, wait_vms
from tests.harness import BIN, Cloud, run, wait_for

CLOUDS: list[dict[str, Any]] = [{"name": "gold", "hosts": ["hv01"], "sync": True}]


def test_provider_protect_counts_nics_from_0(cloud: Cloud, tmp_path: Path) -> None:
    site = start_site(cloud, tmp_path, clouds=CLOUDS)
    create_vm(site, "hv01", "web01", extra=("--nic", "10.0.0.5/24", "--nic", "dhcp"))
    shown = agent_vm(site, "hv01", "show", "web01").stdout
    assert "nic 0: static 10.0.0.5/24" in shown and "nic 1: dhcp" in shown, shown
    wait_vms(cloud, {"web01"})
    assert cloud.asr_json("cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1",
                          "--wait")["state"] == "Succeeded"
    cfg = str(tmp_path / "prov1.toml")

    def protect(*extra: str) -> Any:
        return run([str(BIN / "asr-provider"), "vm", "protect", "web01", "--config", cfg, "--json", *extra],
                   env=cloud.env())

    res = protect("--nic", "-1")
    assert res.returncode == 2 and "ASR-0002" in res.stderr and "numbered from 0" in res.stderr, res.stderr
    res = protect("--nic", "0")
    assert res.returncode == 43 and "NIC 0 uses static addressing" in res.stderr, res.stderr
    res = protect("--nic", "2")
    assert res.returncode == 43 and "chosen NIC 2 does not exist" in res.stderr, res.stderr
    res = protect("--nic", "1")
    assert res.returncode == 0, res.stderr
    job = json.loads(res.stdout)["job_id"]
    done = wait_for(lambda: (lambda j: j if j["state"] in ("Succeeded", "Failed") else None)(
        cloud.asr_json("job", "show", job, "--vault", "contoso")), 60, what=f"job {job}")
    assert done["state"] == "Succeeded", done
