"""Replication benchmark: initial copy, a 1% incremental cycle, and a resync of one disk image,
end to end through a real cloudsvc (TLS gRPC) and the agent's engine; rsync and restic on the
same image for comparison. Figures, not a test.

    .venv/bin/python bench/replication_cycle.py [--size-mib 1024] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.hypervisor import LocalHypervisor  # noqa: E402
from tests.harness import Cloud, Procs  # noqa: E402
from tests.replication.fixture import MiB, protect  # noqa: E402


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.monotonic() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--changed", type=float, default=0.01)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-repl-"))
    procs = Procs(root)
    out: dict[str, object] = {"size_mib": args.size_mib}
    try:
        cloud = Cloud(procs, root / "cloud").start()
        size = args.size_mib * MiB
        p = protect(cloud, root, os_size=size, fill=False)
        hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
        # half random, half text-like (compressible) content, written through the guest path
        text = (b"log line: the quick brown fox jumps over the lazy dog %d\n" * 20000)[:MiB]
        for off in range(0, size, MiB):
            hv.write("vm1", 0, off, os.urandom(MiB) if (off // MiB) % 2 else text)
        res = p.once()
        out["initial"] = {"seconds": res["seconds"], "MBps": size / res["seconds"] / 1e6,
                          "bytes_sent": res["bytes_sent"], "stall_ms": res["stall_seconds"] * 1000}
        rng = random.Random(1)
        nblocks = size // 65536
        for b in rng.sample(range(nblocks), int(nblocks * args.changed)):
            hv.write("vm1", 0, b * 65536, os.urandom(65536))
        res = p.once()
        out["incremental"] = {"seconds": res["seconds"], "blocks": res["blocks_changed"],
                              "blocks_read": res["blocks_read"], "bytes_sent": res["bytes_sent"]}
        hv.reset_tracking("vm1")
        hv.write("vm1", 0, 0, os.urandom(65536))
        res = p.once()
        out["resync"] = {"seconds": res["seconds"], "GBps_scanned": res["blocks_read"] * 65536 / res["seconds"] / 1e9,
                         "blocks_read": res["blocks_read"], "blocks_changed": res["blocks_changed"]}
        store = root / "cloud" / "storage"
        out["vault_bytes"] = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
        # the same image with rsync and restic
        raw = root / "image.raw"
        subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(p.disks[0][0]), str(raw)], check=True)
        dst = root / "rsync-dst.raw"
        out["rsync_initial_s"] = timed(["rsync", "--inplace", "--no-whole-file", str(raw), str(dst)])
        with open(raw, "r+b") as f:
            for b in rng.sample(range(nblocks), int(nblocks * args.changed)):
                f.seek(b * 65536)
                f.write(os.urandom(65536))
        out["rsync_incremental_s"] = timed(["rsync", "--inplace", "--no-whole-file", str(raw), str(dst)])
        env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(root / "restic"))
        subprocess.run(["restic", "init"], check=True, capture_output=True, env=env)
        out["restic_initial_s"] = timed(["restic", "backup", str(raw)], env)
        with open(raw, "r+b") as f:
            f.seek(0)
            f.write(os.urandom(65536))
        out["restic_incremental_s"] = timed(["restic", "backup", str(raw)], env)
        out["restic_repo_bytes"] = sum(f.stat().st_size for f in (root / "restic").rglob("*") if f.is_file())
        hv.close()
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
