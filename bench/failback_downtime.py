"""Issue 11, re-protect: what reverse replication saves at failback. Figures, not a test.

Per disk size, with the real daemons of ``tests/sitetosite/fixture.py`` (cloud, prov-a,
prov-b, hv01, hv11 holding replicas, hv12) in a temp dir of their own, and the disks filled
as ``site_to_site_rto.fill`` does (40% random, 30% text, 30% zero extents):

1. protect web01 site to site, initial copy, replica disks at the point; ``asr failover
   unplanned`` and commit: the VM runs on hv11 on the replica disks;
2. **without re-protect**: the VM writes ``--blocks`` 64 KiB blocks spread over its disks, then
   ``asr failover planned --direction to-primary`` (failback: the VM on hv11 is shut down, hv01
   compares every block of both sides by hash and fetches the differing ones) and commit;
3. failover again (unplanned, commit), then ``asr failover reprotect`` (its first sync is a
   full comparison, while the VM runs: timed as well), the same number of block writes, and
   failback: **with re-protect** hv01 fetches only the blocks written since the last sync.

For each failback: the job's time from created to ended (the failover VM is down from its
first step: that is the downtime), its failback task's time, the blocks compared and
received; the disks equal the VM's on hv11 (``qemu-img compare``).

    .venv/bin/python bench/failback_downtime.py [--sizes-gib 1,4] [--blocks 64] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from site_to_site_rto import fill, split  # noqa: E402

from asrclock import from_iso  # noqa: E402
from tests.harness import Cloud, Procs, wait_for  # noqa: E402
from tests.replication.fixture import MiB  # noqa: E402
from tests.sitetosite.fixture import TwoSites, compare  # noqa: E402

BLOCK = 64 * 1024


def write_blocks(s: TwoSites, sizes: tuple[int, int], n: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(n):
        disk = i % 2
        block = rng.randrange(sizes[disk] // BLOCK)
        s.hv11.write("web01", disk, block * BLOCK, rng.randbytes(BLOCK))
    s.hv11.close()


def timed_job(s: TwoSites, *args: str) -> dict[str, Any]:
    t = time.monotonic()
    job = s.job(*args)
    wall = time.monotonic() - t
    if job["state"] != "Succeeded":
        raise RuntimeError(f"{' '.join(args)}: {job}")
    out = " ".join(str(task.get("output", "")) for task in job["tasks"])
    m = re.search(r"compared (\d+) blocks, (?:received|fetched) (\d+) differing blocks", out)
    fb = [task for task in job["tasks"] if task["name"].startswith(("Fail back", "Re-protect"))]

    def span(x: dict[str, Any], start: str = "started_at") -> float:
        return round(from_iso(x["ended_at"]) - from_iso(x[start]), 3) if x.get(start) and x.get("ended_at") \
            else 0.0

    return {"command_s": round(wall, 3), "job_s": span(job, "created_at"), "task_s": span(fb[-1]) if fb else 0.0,
            "compared": int(m.group(1)) if m else None, "received": int(m.group(2)) if m else None,
            "last_delta": "the last delta of re-protect" in out}


def wait_applied(s: TwoSites, point: str) -> None:
    wait_for(lambda: s.applied() == point, 900, interval=0.1, what=f"replica disks at point {point}")


def follows(s: TwoSites) -> str:
    s.hv11.close()
    for (src, fmt), disk in zip(s.disks, s.hv11.get("web01").disks, strict=True):
        r = compare(src, fmt, disk.path, "vhdx")
        if r.returncode != 0:
            return f"DIFFERENT: {r.stdout.strip()}"
    return "identical"


def one_size(root: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    procs = Procs(root)
    out: dict[str, Any] = {}
    try:
        cloud = Cloud(procs, root / "cloud").start()
        sizes = split(size)
        s = TwoSites(cloud, root, *sizes)
        fill(s.hv01, "web01", sizes, args.seed)
        s.protect()
        wait_applied(s, str(s.once()["point_id"]))
        for mode in ("without re-protect", "with re-protect"):
            s.job("failover", "unplanned", "web01")
            s.job("failover", "commit", "web01")
            r: dict[str, Any] = {}
            if mode == "with re-protect":
                r["reprotect"] = timed_job(s, "failover", "reprotect", "web01")
            write_blocks(s, sizes, args.blocks, args.seed + len(out))
            r["failback"] = timed_job(s, "failover", "planned", "web01", "--direction", "to-primary")
            s.hv11.close()
            r["check"] = follows(s)
            s.job("failover", "commit", "web01")
            out[mode] = r
            print(f"  {size // MiB} MiB {mode}: {json.dumps(r)}", file=sys.stderr, flush=True)
            if mode == "without re-protect":   # the replica follows the primary again
                wait_applied(s, str(s.once()["point_id"]))
    finally:
        procs.stop_all()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-gib", default="1,4")
    ap.add_argument("--blocks", type=int, default=64, help="64 KiB blocks the VM writes before failback")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    results = {}
    for gib in [float(x) for x in args.sizes_gib.split(",")]:
        with tempfile.TemporaryDirectory(prefix="asr-fbdown-") as tmp:
            results[f"{gib:g} GiB"] = one_size(Path(tmp), int(gib * 1024) * MiB, args)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print("| size | failback | downtime (job) | failback task | compared | received | disks |")
    print("|---|---|---|---|---|---|---|")
    for size, r in results.items():
        for mode, x in r.items():
            f = x["failback"]
            print(f"| {size} | {mode} | {f['job_s']} s | {f['task_s']} s | {f['compared']} | {f['received']} | "
                  f"{x['check']} |")
        rp = r["with re-protect"]["reprotect"]
        print(f"| {size} | (re-protect's first sync, VM running) | {rp['job_s']} s | {rp['task_s']} s | "
              f"{rp['compared']} | {rp['received']} | |")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
