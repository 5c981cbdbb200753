"""Replication at two disk sizes, end to end through a real cloudsvc (TLS gRPC) and the agent's
engine as separate processes: initial copy, a 1%-changed incremental, a resync by hash
comparison, peak RSS (VmHWM) of the agent and of cloudsvc, CPU seconds of each, and (at the
first size) 24 hourly points with 1% change each against the disk's allocated size, with an
injected clock so the day passes in seconds. rsync and restic run on the same image at the
first size for comparison. Figures, not a test.

    .venv/bin/python bench/replication_scale.py [--sizes-mib 1024,4096] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.hypervisor import LocalHypervisor  # noqa: E402
from asrcli.client import Client  # noqa: E402
from asrpb import replication_pb2, replication_pb2_grpc  # noqa: E402
from tests.harness import Cloud, Procs  # noqa: E402
from tests.replication.fixture import MiB, Protected, protect  # noqa: E402

BLOCK = 65536
T0 = 1_780_002_000.0 - 1_780_002_000.0 % 3600  # an hour boundary (the injected clock)
TICK = os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def once(p: Protected, cloud_pid: int) -> dict[str, Any]:
    """One `python -m agent.replication once` process; its VmHWM is polled while it runs and
    its rusage (peak RSS, CPU) taken when it exits. The cycle's own timing is in the result."""
    cloud_cpu = cpu_seconds(cloud_pid)
    proc = subprocess.Popen([sys.executable, "-m", "agent.replication", "once", p.vm_id, "--config",
                             str(p.config)], env=p.cloud.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    hwm = 0
    while True:
        try:
            hwm = max(hwm, status_kib(proc.pid, "VmHWM"))
        except (OSError, ValueError):
            pass
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    assert proc.returncode == 0, out
    res = dict(json.loads(out.strip().splitlines()[-1]))
    res["agent_vmhwm_mib"] = round(max(hwm, ru.ru_maxrss) / 1024, 1)
    res["agent_cpu_s"] = round(ru.ru_utime + ru.ru_stime, 2)
    res["cloud_cpu_s"] = round(cpu_seconds(cloud_pid) - cloud_cpu, 2)
    return res


def phases(res: dict[str, Any]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in res.get("phases", {}).items()}


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.monotonic() - t


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def change(hv: LocalHypervisor, rng: random.Random, nblocks: int, fraction: float) -> int:
    picked = rng.sample(range(nblocks), int(nblocks * fraction))
    for b in picked:
        hv.write("vm1", 0, b * BLOCK, os.urandom(BLOCK))
    return len(picked)


def run_size(size_mib: int, args: argparse.Namespace, first: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-scale-{size_mib}-"))
    procs = Procs(root)
    out: dict[str, Any] = {"size_mib": size_mib}
    clock = root / "clock"
    clock.write_text(str(T0))
    try:
        cloud = Cloud(procs, root / "cloud", clock_file=clock).start()
        assert cloud.proc is not None
        cpid = cloud.proc.popen.pid
        size = size_mib * MiB
        p = protect(cloud, root, os_size=size, fill=False, retention_hours=24)
        hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
        # half random, half text-like (compressible) content, written through the guest path
        text = (b"log line: the quick brown fox jumps over the lazy dog %d\n" * 20000)[:MiB]
        for off in range(0, size, MiB):
            hv.write("vm1", 0, off, os.urandom(MiB) if (off // MiB) % 2 else text)
        allocated = size  # every block of the disk holds data
        out["cloud_rss_before_mib"] = round(status_kib(cpid, "VmRSS") / 1024, 1)
        res = once(p, cpid)
        out["initial"] = {"seconds": round(res["seconds"], 3), "MBps": round(size / res["seconds"] / 1e6, 1),
                          "bytes_sent": res["bytes_sent"], "stall_ms": round(res["stall_seconds"] * 1000, 2),
                          "agent_vmhwm_mib": res["agent_vmhwm_mib"], "agent_cpu_s": res["agent_cpu_s"],
                          "cloud_cpu_s": res["cloud_cpu_s"], "phases_s": phases(res)}
        rng = random.Random(1)
        nblocks = size // BLOCK
        hour = 1
        clock.write_text(str(T0 + 3600 * hour))
        n = change(hv, rng, nblocks, args.changed)
        res = once(p, cpid)
        out["incremental"] = {"seconds": round(res["seconds"], 3), "blocks": res["blocks_changed"],
                              "blocks_read": res["blocks_read"], "written": n, "bytes_sent": res["bytes_sent"],
                              "agent_vmhwm_mib": res["agent_vmhwm_mib"], "phases_s": phases(res)}
        agent_peak = max(out["initial"]["agent_vmhwm_mib"], res["agent_vmhwm_mib"])
        hv.reset_tracking("vm1")
        hv.write("vm1", 0, 0, os.urandom(BLOCK))
        hour += 1
        clock.write_text(str(T0 + 3600 * hour))
        res = once(p, cpid)
        out["resync"] = {"seconds": round(res["seconds"], 3),
                         "GBps_scanned": round(res["blocks_read"] * BLOCK / res["seconds"] / 1e9, 2),
                         "blocks_read": res["blocks_read"], "blocks_changed": res["blocks_changed"],
                         "agent_vmhwm_mib": res["agent_vmhwm_mib"],
                         "phases_s": phases(res)}
        # the same resync without the agent's fingerprint files: keyed ids against the
        # vault's block map (the path taken when another point is the latest, or the files
        # are gone)
        for f in (p.site.root / "hv01" / "fingerprints" / p.vm_id).glob("*.fp"):
            f.unlink()
        hv.reset_tracking("vm1")
        hv.write("vm1", 0, BLOCK, os.urandom(BLOCK))
        hour += 1
        clock.write_text(str(T0 + 3600 * hour))
        res2 = once(p, cpid)
        out["resync_block_map"] = {"seconds": round(res2["seconds"], 3),
                                   "GBps_scanned": round(res2["blocks_read"] * BLOCK / res2["seconds"] / 1e9, 2),
                                   "resync_by": res2["resync_by"], "blocks_read": res2["blocks_read"],
                                   "blocks_changed": res2["blocks_changed"]}
        out["resync"]["resync_by"] = res["resync_by"]
        out["agent_peak_rss_mib"] = max(agent_peak, res["agent_vmhwm_mib"], res2["agent_vmhwm_mib"])
        out["cloud_peak_rss_mib"] = round(status_kib(cpid, "VmHWM") / 1024, 1)
        if first:
            # 24 hourly points (the four above are hours 0-3), 1% of the blocks changed
            # each later hour
            cycle_s = []
            for later in range(hour + 1, 24):
                clock.write_text(str(T0 + 3600 * later))
                change(hv, rng, nblocks, args.changed)
                cycle_s.append(once(p, cpid)["seconds"])
            client = Client(cloud.endpoint, str(cloud.credentials))
            stub = replication_pb2_grpc.PointsStub(client.channel)
            report = client.call(stub.RunMaintenance, replication_pb2.MaintenanceRequest(vault="contoso"))
            points = p.points()
            stored = dir_bytes(root / "cloud" / "storage")
            out["hourly_24"] = {"points": len(points), "vault_bytes": stored, "allocated_bytes": allocated,
                                "image_file_bytes": p.disks[0][0].stat().st_blocks * 512,
                                "ratio_to_allocated": round(stored / allocated, 3),
                                "maintenance_bytes_after": report.bytes_after,
                                "median_cycle_s": round(sorted(cycle_s)[len(cycle_s) // 2], 3)}
            out.update(compare(root, p, size, nblocks, rng, args.changed))
        hv.close()
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return out


def compare(root: Path, p: Protected, size: int, nblocks: int, rng: random.Random, changed: float) -> dict[str, Any]:
    """rsync (delta transfer into an existing copy) and restic (dedup backup) on a raw copy."""
    out: dict[str, Any] = {}
    raw = root / "image.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(p.disks[0][0]), str(raw)], check=True)
    dst = root / "rsync-dst.raw"
    out["rsync_initial_s"] = round(timed(["rsync", "--inplace", "--no-whole-file", str(raw), str(dst)]), 3)
    with open(raw, "r+b") as f:
        for b in rng.sample(range(nblocks), int(nblocks * changed)):
            f.seek(b * BLOCK)
            f.write(os.urandom(BLOCK))
    out["rsync_incremental_s"] = round(timed(["rsync", "--inplace", "--no-whole-file", str(raw), str(dst)]), 3)
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(root / "restic"))
    subprocess.run(["restic", "init"], check=True, capture_output=True, env=env)
    out["restic_initial_s"] = round(timed(["restic", "backup", str(raw)], env), 3)
    with open(raw, "r+b") as f:
        for b in rng.sample(range(nblocks), int(nblocks * changed)):
            f.seek(b * BLOCK)
            f.write(os.urandom(BLOCK))
    out["restic_incremental_s"] = round(timed(["restic", "backup", str(raw)], env), 3)
    out["restic_repo_bytes"] = dir_bytes(root / "restic")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mib", default="1024,4096")
    ap.add_argument("--changed", type=float, default=0.01)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes_mib.split(",")]
    machine = f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}"
    result: dict[str, Any] = {"machine": machine,
                              "runs": [run_size(s, args, i == 0) for i, s in enumerate(sizes)]}
    runs = result["runs"]
    if len(runs) > 1:
        a, b = runs[0], runs[-1]
        result["rss_ratio_agent"] = round(b["agent_peak_rss_mib"] / a["agent_peak_rss_mib"], 3)
        result["rss_ratio_cloud"] = round(b["cloud_peak_rss_mib"] / a["cloud_peak_rss_mib"], 3)
    a = runs[0]
    if "rsync_initial_s" in a:
        result["ratios"] = {
            "initial_vs_rsync": round(a["rsync_initial_s"] / a["initial"]["seconds"], 2),
            "initial_vs_restic": round(a["restic_initial_s"] / a["initial"]["seconds"], 2),
            "incremental_vs_rsync": round(a["rsync_incremental_s"] / a["incremental"]["seconds"], 2),
            "incremental_vs_restic": round(a["restic_incremental_s"] / a["incremental"]["seconds"], 2),
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
