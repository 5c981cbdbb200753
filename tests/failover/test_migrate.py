"""Issue 5: migration is failover, commit and protection disabled in one job: the VM then lives
only in the vault (shown by `asr vm show` as unprotected with its recovered VM), replication
stops on the agent (its settings file is removed), and billing stops accruing at the migration."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asrclock import from_iso
from tests.failover.fixture import VAULT, asr_job, assert_disks_equal, recovered, vm_state
from tests.harness import Cloud, wait_for
from tests.replication.fixture import protect


def billed_days(cloud: Cloud, month: str, vm_id: str) -> float:
    rep = cloud.asr_json("billing", "report", *VAULT, "--month", month)
    return float(next(line["protected_days"] for line in rep["vms"] if line["vm_id"] == vm_id))


def test_migration(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    p.once()
    p.write(1, 65536, 4096, 0x6e)                   # shipped by the migration's final cycle
    settings = p.site.root / "hv01" / "replication" / f"{p.vm_id}.json"
    assert settings.exists()

    job = asr_job(p, "failover", "migrate", p.vm)
    assert job["state"] == "Succeeded" and job["kind"] == "Migrate", job
    final = p.snapshot_raw(tmp_path, "migrated")     # the source, shut down by the migration
    [rvm] = recovered(p)
    assert rvm["kind"] == "failover" and rvm["state"] == "Running"
    assert_disks_equal(rvm, final)

    st = vm_state(p)
    assert st["protection_state"] == "Unprotected"
    assert [(r["name"], r["state"]) for r in st["recovered_vms"]] == [("vm1", "Running")]
    assert all(Path(d["path"]).is_absolute() and Path(d["path"]).exists() for d in st["recovered_vms"][0]["disks"])
    wait_for(lambda: not settings.exists(), 30, what="the agent to drop the VM's replication settings")
    res = p.once(check=False)
    assert res["returncode"] != 0                     # the agent no longer replicates it
    again = cloud.asr("failover", "test", p.vm, *VAULT, check=False)
    assert again.returncode != 0                      # nor can it fail over again

    # billing: the VM was protected from enabling protection until the migration, no longer
    jobs: list[dict[str, Any]] = cloud.asr_json("job", "list", *VAULT)
    enabled = max(from_iso(j["ended_at"]) for j in jobs
                  if j["kind"] == "EnableProtection" and j["state"] == "Succeeded")
    migrated = from_iso(job["ended_at"])
    month = datetime.fromtimestamp(migrated, UTC).strftime("%Y-%m")
    if datetime.fromtimestamp(enabled, UTC).strftime("%Y-%m") != month:
        enabled = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC).timestamp()   # ran across a month
    days = billed_days(cloud, month, p.vm_id)
    # protected days are billed to 4 decimals (8.64 s)
    assert abs(days - (migrated - enabled) / 86400) <= 0.00005 + 1e-9, (days, enabled, migrated)
    # Let the wall clock move past one step of that rounding; a VM still billed would now show more days.
    wait_for(lambda: time.time() > migrated + 9, 20, interval=0.5, what="the clock to pass the migration by 9 s")
    assert billed_days(cloud, month, p.vm_id) == days   # no longer accrues
