"""Issue 11, must-shows 2 and 4: re-protect goes the other way. After an unplanned failover
with the primary host down and commit, `asr failover reprotect` makes the returned (fenced)
primary follow the VM running on the recovery host: a first sync compares every block by
hash and fetches only those that differ (the recovery site's writes, and the primary's own
write that never left it), later syncs fetch what the VM wrote since, and failback ships
only the last delta (counted at each step). Real daemons: one cloud service, two providers,
four agents (tests/sitetosite/fixture.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from asrerrors import Fenced
from tests.harness import Cloud, wait_for
from tests.replication.fixture import MiB
from tests.sitetosite.fixture import TwoSites, compare

KiB = 1024


def _fetched(job: dict[str, object], pattern: str) -> int:
    out = " ".join(str(t["output"]) for t in job["tasks"])  # type: ignore[attr-defined]
    m = re.search(pattern, out)
    assert m, out
    return int(m.group(1))


def _follows(s: TwoSites) -> None:
    """hv01's disks equal those of the VM running on hv11 (qemu-img compare)."""
    s.hv11.close()
    for (src, fmt), disk in zip(s.disks, s.hv11.get("web01").disks, strict=True):
        r = compare(src, fmt, disk.path, "vhdx")
        assert r.returncode == 0, f"{src} != {disk.path}: {r.stdout}{r.stderr}"


def test_reprotect_then_failback_ships_only_the_last_delta(cloud: Cloud, tmp_path: Path) -> None:
    s = TwoSites(cloud, tmp_path, os_size=8 * MiB, data_size=4 * MiB)
    s.protect()
    first = s.once()
    wait_for(lambda: s.applied() == first["point_id"], 60, what="replica disks at the first point")

    # the primary site is lost with one write that never shipped; the VM runs on hv11
    s.write(s.hv01, "web01", 0, 7 * MiB, 64 * KiB, 0x61)
    s.a.agents["hv01"].kill9()
    assert s.job("failover", "unplanned", "web01")["state"] == "Succeeded"
    assert s.job("failover", "commit", "web01")["state"] == "Succeeded"
    s.write(s.hv11, "web01", 0, 1 * MiB, 128 * KiB, 0x71)           # 2 blocks on the recovery site
    s.a.start_agent("hv01")
    wait_for(lambda: s.hv01.fenced("web01") is not None, 60, what="hv01 to fence its stale copy")

    # ---- re-protect: the first sync compares every block and fetches the 3 that differ ---------------
    assert "reprotect" in s.state()["allowed_operations"] and "migrate" not in s.state()["allowed_operations"]
    job = s.job("failover", "reprotect", "web01")
    assert job["state"] == "Succeeded" and job["kind"] == "Reprotect", job
    assert _fetched(job, r"fetched (\d+) differing blocks") == 3     # hv11's 2, and hv01's lost write undone
    st = s.state()
    assert st["protection_state"] == "ReverseProtected" and st["active_location"] == "Recovery", st
    # the vault knows the primary's last sync (ReportReverse): health follows it
    assert st["reverse_synced_at"] and st["reverse_blocks"] == 3 and st["reverse_error"] == "", st
    assert st["replication_health"] == "Normal", st
    assert "failback" in st["allowed_operations"] and "reprotect" not in st["allowed_operations"]
    table = cloud.asr("vm", "show", "web01", "--vault", "contoso").stdout
    assert "hv01 follows the VM on hv11" in table, table
    _follows(s)
    # the primary's copy follows, but may not run
    assert s.hv01.get("web01").power_state == "Off"
    with pytest.raises(Fenced):
        s.hv01.start("web01")

    # ---- later writes come back by the next scheduled sync (every copy frequency: 30 s) ---------------
    entry = tmp_path / "a" / "hv01" / "reverse" / f"{s.vm_id}.json"
    synced_at = json.loads(entry.read_text())["last_sync_at"]
    s.write(s.hv11, "web01", 1, 3 * MiB, 4 * KiB, 0x72)               # 1 block
    s.write(s.hv11, "web01", 0, 5 * MiB, 64 * KiB, 0x73)              # 1 block
    wait_for(lambda: json.loads(entry.read_text())["last_sync_at"] > synced_at, 90, interval=0.5,
             what="the scheduled reverse sync")
    doc = json.loads(entry.read_text())
    assert doc["last_blocks"] == 2 and doc["last_error"] == "", doc
    wait_for(lambda: s.state()["reverse_blocks"] == 2, 30, what="the vault to hear of the scheduled sync")
    _follows(s)

    # ---- failback: only the last delta travels ----------------------------------------------------------
    s.write(s.hv11, "web01", 1, 0, 64 * KiB, 0x74)                    # 1 block after the last sync
    job = s.job("failover", "planned", "web01", "--direction", "to-primary")
    assert job["state"] == "Succeeded" and job["kind"] == "Failback", job
    out = job["tasks"][-1]["output"]
    assert "the last delta of re-protect" in out and "received 1 differing blocks (65536 bytes)" in out, out
    _follows(s)
    assert s.hv01.fenced("web01") is None and s.hv01.get("web01").power_state == "Running"
    assert not entry.exists()                                         # reverse replication ended
    assert s.job("failover", "commit", "web01")["state"] == "Succeeded"
    assert [v.name for v in s.hv11.list()] == []
    assert s.state()["protection_state"] == "Protected"

    # forward replication resumes incrementally: every block the recovery site changed (and the
    # lost write undone) travels once, onto the re-armed replica, which then equals the primary
    again = s.once()
    assert again["modes"] == ["incremental", "incremental"] and again["blocks_changed"] == 6, again
    wait_for(lambda: s.applied() == again["point_id"], 60, what="the re-armed replica at the new point")
    s.equal([str(s.replica_dir / s.vm_id / "disks" / f"disk{i}.vhdx") for i in range(2)], "vhdx", s.raw("home"))


def test_reprotect_is_refused_where_it_cannot_work(cloud: Cloud, tmp_path: Path) -> None:
    """Before the failover is committed it is not offered; a VM recovered into the vault fails
    back by comparison instead, and the refusal says so."""
    s = TwoSites(cloud, tmp_path, os_size=8 * MiB, data_size=4 * MiB)
    s.protect()
    s.protect_vault_vm()
    res = cloud.asr("failover", "reprotect", "web01", "--vault", "contoso", check=False)
    assert res.returncode != 0 and "reprotect is not allowed for VM 'web01' in state Protected" in res.stderr, \
        res.stderr
    assert s.job("failover", "unplanned", "app01")["state"] == "Succeeded"
    assert s.job("failover", "commit", "app01")["state"] == "Succeeded"
    res = cloud.asr("failover", "reprotect", "app01", "--vault", "contoso", check=False)
    assert res.returncode != 0 and "reprotect is for VMs protected site to site" in res.stderr, res.stderr
    assert "--direction to-primary" in res.stderr, res.stderr
