"""What group frames cost after retention: the vault's size over a day of churn, for every
compression of ``chunkfmt.COMPRESSION`` in one run: ``fast`` frames one block at a time,
``balanced`` and ``strong`` group new blocks (definitions: chunkfmt; until 2026-12-03
``balanced`` was one block per frame too).

A partly dead group frame stays whole (the cloud cannot rewrite a frame it cannot decrypt;
``cloudsvc/vaultstore/collector.py``): when a block of a group is overwritten and the point
that held its old content expires, the old content is still stored until every member of
its group is dead. One frame per block frees it at once. So a grouping policy starts smaller
(better compression) and then keeps dead bytes that one frame per block frees; this bench
measured where they cross (they did, before the collector regrouped partly dead groups of
unencrypted VMs), for two kinds of churn:

* ``random``: each hour, ``--changed`` of the disk's blocks, picked uniformly (the worst
  case for groups: almost every group keeps a live member for a long time);
* ``runs``: the same number of blocks, in runs of 16 consecutive blocks (files rewritten
  whole, as in the real file-system day of ``bench/real_data.py``).

The disk starts full of real files of this machine (``bench/real_data.py``'s sources,
concatenated in a shuffled order) and each changed block takes the next 64 KiB of them, so everything written
compresses like real data. A real cloud service (clock injected: an hour passes per cycle),
provider and ``agent.replication once`` per hour; after each cycle the vault's maintenance
runs (retention, then garbage collection) and the storage directory is measured.

    .venv/bin/python bench/group_space.py [--size-mib 256] [--hours 30] [--retention-hours 6]
                                          [--changed 0.02] [--pattern random|runs|both]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.hypervisor import LocalHypervisor  # noqa: E402
from asrcli.client import Client  # noqa: E402
from asrpb import replication_pb2, replication_pb2_grpc  # noqa: E402
from bench.real_data import SOURCES, files_of  # noqa: E402
from bench.replication_scale import T0, dir_bytes, once  # noqa: E402
from chunkfmt import COMPRESSION  # noqa: E402
from tests.harness import Cloud, Procs  # noqa: E402
from tests.replication.fixture import MiB, protect  # noqa: E402

BLOCK = 65536
RUN = 16  # blocks per run of the ``runs`` pattern


def real_content(nbytes: int) -> bytes:
    """``nbytes`` of this machine's files, concatenated in a shuffled order (so the first
    copy and the churn after it are alike: the sources' own order puts compressed
    documentation first and Python source later), with no 64 KiB block all zero."""
    parts: list[bytes] = []
    have = 0
    files = [src for src, _ in files_of(SOURCES)]
    random.Random(3).shuffle(files)
    for src in files:
        try:
            data = src.read_bytes()
        except OSError:
            continue
        parts.append(data)
        have += len(data)
        if have >= nbytes + BLOCK:
            break
    pool = b"".join(parts)
    if len(pool) < nbytes:
        raise SystemExit(f"only {len(pool)} bytes of files found for {nbytes}")
    # blocks that are all zero would be skipped (absent), not stored: keep only real ones
    blocks = [pool[i:i + BLOCK] for i in range(0, len(pool) - BLOCK + 1, BLOCK)]
    return b"".join(b for b in blocks if b.count(0) != BLOCK)[:nbytes]


def picks(rng: random.Random, pattern: str, nblocks: int, count: int) -> list[int]:
    if pattern == "random":
        return sorted(rng.sample(range(nblocks), count))
    starts = rng.sample(range(0, nblocks - RUN + 1, RUN), max(1, count // RUN))
    return sorted(b for s in starts for b in range(s, s + RUN))


def run_policy(compression: str, pattern: str, pool: bytes, args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-groups-{compression}-"))
    procs = Procs(root)
    clock = root / "clock"
    clock.write_text(str(T0))
    size = args.size_mib * MiB
    nblocks = size // BLOCK
    try:
        cloud = Cloud(procs, root / "cloud", clock_file=clock).start()
        assert cloud.proc is not None
        cpid = cloud.proc.popen.pid
        p = protect(cloud, root, os_size=size, fill=False, retention_hours=args.retention_hours,
                    compression=compression)
        hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
        for off in range(0, size, MiB):
            hv.write("vm1", 0, off, pool[off:off + MiB])
        storage = root / "cloud" / "storage"
        client = Client(cloud.endpoint, str(cloud.credentials))
        stub = replication_pb2_grpc.PointsStub(client.channel)
        first = once(p, cpid)
        trace = [{"hour": 0, "vault_mb": round(dir_bytes(storage) / 1e6, 2),
                  "sent_mb": round(first["bytes_sent"] / 1e6, 2)}]
        rng = random.Random(7)  # the same churn for every policy
        at = size
        count = int(nblocks * args.changed)
        for hour in range(1, args.hours + 1):
            clock.write_text(str(T0 + 3600 * hour))
            for b in picks(rng, pattern, nblocks, count):
                hv.write("vm1", 0, b * BLOCK, pool[at:at + BLOCK])
                at += BLOCK
            res = once(p, cpid)
            report = client.call(stub.RunMaintenance, replication_pb2.MaintenanceRequest(vault="contoso"))
            trace.append({"hour": hour, "vault_mb": round(dir_bytes(storage) / 1e6, 2),
                          "sent_mb": round(res["bytes_sent"] / 1e6, 2), "points": len(p.points()),
                          "gc_after_mb": round(report.bytes_after / 1e6, 2)})
        hv.close()
        return {"compression": compression, "pattern": pattern, "trace": trace}
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--hours", type=int, default=30)
    ap.add_argument("--retention-hours", type=int, default=6)
    ap.add_argument("--changed", type=float, default=0.02, help="fraction of the disk's blocks changed each hour")
    ap.add_argument("--pattern", choices=["random", "runs", "both"], default="both")
    args = ap.parse_args()
    size = args.size_mib * MiB
    churn = args.hours * (int(size // BLOCK * args.changed) + RUN) * BLOCK
    pool = real_content(size + churn)
    patterns = ["random", "runs"] if args.pattern == "both" else [args.pattern]
    out: dict[str, Any] = {"machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
                           "size_mib": args.size_mib, "hours": args.hours, "retention_hours": args.retention_hours,
                           "changed": args.changed, "runs": []}
    for pattern in patterns:
        for compression in COMPRESSION:
            res = run_policy(compression, pattern, pool, args)
            out["runs"].append(res)
            t = res["trace"]
            print(f"{pattern:6} {compression:8}: vault after the first copy {t[0]['vault_mb']} MB, "
                  f"at the retention horizon (hour {args.retention_hours}) {t[args.retention_hours]['vault_mb']} MB, "
                  f"at hour {args.hours} {t[-1]['vault_mb']} MB", file=sys.stderr, flush=True)
    summary = {}
    for pattern in patterns:
        by = {r["compression"]: r["trace"] for r in out["runs"] if r["pattern"] == pattern}
        summary[pattern] = [{"hour": hour, **{f"{c}_mb": by[c][hour]["vault_mb"] for c in by}}
                            for hour in range(args.hours + 1)]
    out["summary"] = summary
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
