"""Issue 12, must-show 3: bandwidth throttling measured on the wire. One agent host, two VMs
replicating their initial copies at once, ``[throttle]`` set to 5 MB/s in work hours and
10 MB/s outside them. The judge is a CONNECT proxy between the agent and the cloud that
timestamps every byte sent to the cloud's API port: over 20 s of work hours the host's
upload is within 10% of 5 MB/s (both VMs' cycles run across the whole window), and once
the injected clock moves to 20:00 the same transfer runs within 10% of 10 MB/s.

Both limits are far below what this machine can ship (hundreds of MB/s, docs/benchmarks.md),
so the measurement judges the throttle, not the machine: a busy machine still reaches them.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from tests.controlplane.sitefix import agent_vm, wait_vms
from tests.harness import Cloud, Procs, Site, wait_for
from tests.proxies import CountingProxy
from tests.replication.fixture import qemu

MB = 1_000_000
MiB = 1 << 20
DISK = 160 * MiB                     # per VM: more than both windows need at these rates
T_WORK = datetime(2026, 6, 3, 10, 0, tzinfo=UTC).timestamp()     # a Wednesday, 10:00
T_EVENING = datetime(2026, 6, 3, 20, 0, tzinfo=UTC).timestamp()  # the same day, 20:00
WORK_WINDOW_S, EVENING_WINDOW_S = 20.0, 10.0
SETTLE_S = 1.0                       # let the rate in force reach the wire before measuring


def random_fixed_vhd(path: Path, size: int) -> Path:
    """A fixed VHD full of random bytes: nothing compresses, nothing repeats."""
    qemu("qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", str(path), str(size))
    with open(path, "r+b") as f:       # a fixed VHD is the raw disk followed by its footer
        for _ in range(size // (4 * MiB)):
            f.write(os.urandom(4 * MiB))
    return path


def replication_rows(cloud: Cloud) -> dict[str, tuple[float, float]]:
    """vm_id -> (initial progress, last point time), from the cloud's metadata DB."""
    return {r[0]: (float(r[1]), float(r[2] or 0)) for r in cloud.sql(
        "SELECT vm_id, initial_progress, last_point_at FROM replication_status")}


def test_upload_rate_follows_the_schedule_across_two_vms(procs: Procs, tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text(str(T_WORK))
    cloud = Cloud(procs, tmp_path / "cloud", clock_file=clock).start()
    cloud.asr("vault", "create", "contoso", "--region", "japaneast")
    cloud.asr("storage", "create", "store1", "--vault", "contoso", "--region", "japaneast")
    site = Site(cloud, tmp_path, "contoso")
    site.new_key()
    assert site.register_provider("prov1").returncode == 0
    assert site.register_agent("hv01").returncode == 0
    proxy = CountingProxy(count_port=cloud.port)
    try:
        throttle = {"work_hours_mb_s": 5, "non_work_hours_mb_s": 10, "work_start": "08:00", "work_end": "18:00"}
        site.agent_config("hv01", proxy=proxy.url, throttle=throttle)
        disks = tmp_path / "hv01" / "disks"
        disks.mkdir(parents=True)
        vm_ids = {}
        for name in ("vm1", "vm2"):
            disk = random_fixed_vhd(disks / f"{name}-os.vhd", DISK)
            res = agent_vm(site, "hv01", "create", name, "--os-disk", str(disk), "--os", "windows-server-2019",
                           "--json")
            assert res.returncode == 0, res.stderr
            vm_ids[name] = json.loads(res.stdout)["vm_id"]
        site.start_provider(clouds=[{"name": "gold", "hosts": ["hv01"], "sync": True}])
        site.start_agent("hv01", proxy=proxy.url, throttle=throttle)
        wait_vms(cloud, {"vm1", "vm2"})
        assert cloud.asr_json("cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1",
                              "--copy-frequency", "5m", "--start", "now", "--wait")["state"] == "Succeeded"
        for name in ("vm1", "vm2"):
            assert cloud.asr_json("vm", "protect", name, "--vault", "contoso", "--wait")["state"] == "Succeeded"

        # both initial copies under way (each has reported progress) ...
        ids = set(vm_ids.values())
        wait_for(lambda: (lambda rows: all(rows.get(v, (0.0, 0.0))[0] > 0 for v in ids))(replication_rows(cloud)),
                 120, what="both VMs reporting initial progress")
        t0 = proxy.now() + SETTLE_S
        wait_for(lambda: proxy.now() >= t0 + WORK_WINDOW_S, WORK_WINDOW_S + 30, interval=0.2,
                 what="the work-hours window")
        rows = replication_rows(cloud)
        # ... and neither finished within the window: both shared the limit all along
        assert all(rows[v][1] == 0 and rows[v][0] < 1 for v in ids), rows
        work_rate = proxy.bytes_between(t0, t0 + WORK_WINDOW_S) / WORK_WINDOW_S
        assert abs(work_rate - 5 * MB) <= 0.10 * 5 * MB, f"work hours: {work_rate / MB:.2f} MB/s, limit 5"

        # 20:00 by the injected clock: non-work hours
        clock.write_text(str(T_EVENING))
        t1 = proxy.now() + SETTLE_S
        wait_for(lambda: proxy.now() >= t1 + EVENING_WINDOW_S, EVENING_WINDOW_S + 30, interval=0.2,
                 what="the evening window")
        evening_rate = proxy.bytes_between(t1, t1 + EVENING_WINDOW_S) / EVENING_WINDOW_S
        assert abs(evening_rate - 10 * MB) <= 0.10 * 10 * MB, f"evening: {evening_rate / MB:.2f} MB/s, limit 10"
        # the agent says which limit it applies, and when it changed
        log = site.agents["hv01"].text()
        assert "upload limit" in log and "non-work hours" in log
    finally:
        proxy.stop()
