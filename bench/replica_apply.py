"""The recovery host's replica-disk apply alone, in process (issue 11): a replica store filled
with bench/site_to_site.py's image content (1 MiB extents alternately random and text-like,
seeded), then a full apply of its point into a new replica VHDX, then a commit of 1% changed
blocks with its incremental apply. Prints wall and CPU seconds and the number of fsyncs;
``--profile`` adds cProfile's top entries. Figures, not a test.

    .venv/bin/python bench/replica_apply.py [--gib 1] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.replica.store import PointRecord, ReplicaHost  # noqa: E402
from asrclock import FakeClock  # noqa: E402
from asrpb import control_pb2, inventory_pb2  # noqa: E402
from chunkfmt import BLOCK_SIZE, BlockMap, chunk_id, encode_chunk  # noqa: E402
from cloudsvc.vaultstore import DiskDelta  # noqa: E402

if TYPE_CHECKING:
    from _typeshed import HasFileno

MiB = 1 << 20
VM = "vm-0001"
KEY = bytes(range(32))
TEXT = (b"log line: the quick brown fox jumps over the lazy dog %d\n" * 20000)[:MiB]


class FsyncCounter:
    def __init__(self) -> None:
        self.count = 0
        self.real = os.fsync

    def __call__(self, fd: int | HasFileno) -> None:
        self.count += 1
        self.real(fd)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    size = int(args.gib * 1024) * MiB
    root = Path(tempfile.mkdtemp(prefix="bench-replica-apply-"))
    clock = FakeClock()
    h = ReplicaHost(str(root), clock)
    try:
        policy = inventory_pb2.Policy(copy_frequency_seconds=1, retention_hours=2)
        h.pairings.accept(control_pb2.AcceptReplica(vm_id=VM, vm_name="vm1", source_host="hv01",
                                                    pairing_id="pr-1", policy=policy), 1, clock.now())
        pairing = h.pairings.get(VM)
        assert pairing is not None
        r = h.vm(VM)
        sid = r.store.begin_session(VM)
        rng = random.Random(11)
        delta: dict[int, bytes] = {}
        seen: set[bytes] = set()
        for off in range(0, size, MiB):
            data = rng.randbytes(MiB) if (off // MiB) % 2 else TEXT
            items = []
            for i in range(0, MiB, BLOCK_SIZE):
                blk = data[i:i + BLOCK_SIZE]
                cid = chunk_id(KEY, blk)
                delta[(off + i) // BLOCK_SIZE] = cid
                if cid not in seen:
                    seen.add(cid)
                    items.append((cid, encode_chunk(blk, None)))
            if items:
                r.store.put_chunks(sid, items)
        r.store.flush()
        point = r.store.commit_point(sid, VM, [DiskDelta(size, BlockMap.from_mapping(delta))], None, "crash",
                                     clock.now())
        r.store.end_session(sid)
        counter = FsyncCounter()
        os.fsync = counter
        prof = cProfile.Profile() if args.profile else None
        t, c = time.monotonic(), time.process_time()
        if prof:
            prof.enable()
        how = r.disks.apply(r.store, point, None, "")
        if prof:
            prof.disable()
        wall, cpu = time.monotonic() - t, time.process_time() - c
        print(f"{how} apply of {size // MiB} MiB: {wall:.2f} s wall, {cpu:.2f} CPU-s, {counter.count} fsyncs, "
              f"image file {os.path.getsize(r.disks.path(0)) / 1e6:.0f} MB")
        # 1% of the blocks changed, through the recovery host's commit (incremental apply)
        r._save([PointRecord(point.point_id, point.created_at, point.kind, 1, size, 0, clock.now())])
        nblocks = size // BLOCK_SIZE
        sid = r.store.begin_session(VM)
        changed, items = {}, []
        for b in rng.sample(range(nblocks), nblocks // 100):
            blk = rng.randbytes(BLOCK_SIZE)
            changed[b] = chunk_id(KEY, blk)
            items.append((changed[b], encode_chunk(blk, None)))
        r.store.put_chunks(sid, items)
        r.store.flush()
        clock.advance(1)
        counter.count = 0
        t, c = time.monotonic(), time.process_time()
        # the commit, then the apply the applier would make after the answer, back to back
        r.commit(sid, [DiskDelta(size, BlockMap.from_mapping(changed))], point.point_id, "crash", clock.now(), 1,
                 0, pairing)
        how = r.apply_latest()
        print(f"commit with {how} apply of {len(changed)} blocks: {time.monotonic() - t:.3f} s wall, "
              f"{time.process_time() - c:.2f} CPU-s, {counter.count} fsyncs (store, records and marker included)")
        os.fsync = counter.real
        if prof:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    finally:
        h.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
