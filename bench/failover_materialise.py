"""Materialisation speed (the recovery time objective): a point's disk written as a fixed VHD.

    .venv/bin/python bench/failover_materialise.py [--gib 4] [--fill 1.0] [--encrypt] [--dir /tmp]

Fills a local-directory vault store with one disk of distinct 64 KiB blocks (half random, half
repeated: zstd ratio ~2; ``--fill`` is the fraction of non-zero blocks), then times
``materialise_disk`` (fetch + hash check + decrypt + decompress + id check + pwrite + fsync)
and reports seconds per GiB, the ratio to ``dd conv=fsync`` (buffered, and with
``oflag=direct``) of the same size on the same filesystem (the disk's write speed, the bound
the RTO should approach), and the process's peak RSS before and after materialising (peak
memory must not grow with the disk). Prints figures only; nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import chunkfmt as cf
from asrclock import SystemClock
from cloudsvc.failover.materialise import check_key, materialise_disk
from cloudsvc.vaultstore import DiskDelta, LocalDirBackend, VaultStore


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _dd_seconds(path: Path, nbytes: int, *flags: str) -> float:
    """The disk's write speed, measured beside us: dd of the same byte count, fsynced."""
    mib = max(1, nbytes // (1024 * 1024))
    t0 = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fsync", *flags],
                   check=True, capture_output=True)
    took = time.monotonic() - t0
    path.unlink()
    return took * nbytes / (mib * 1024 * 1024)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=4.0)
    ap.add_argument("--fill", type=float, default=1.0)
    ap.add_argument("--encrypt", action="store_true")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    nblocks = int(args.gib * 1024**3) // cf.BLOCK_SIZE
    key = cf.CustomerKey.generate() if args.encrypt else None
    id_key = key.id_key if key else cf.vault_id_key("bench")
    rng = random.Random(0)
    pool = [rng.randbytes(cf.BLOCK_SIZE // 2) for _ in range(64)]
    root = Path(tempfile.mkdtemp(prefix="failover-bench-", dir=args.dir))
    try:
        store = VaultStore(LocalDirBackend(root / "account"), str(root / "index.db"), SystemClock())
        t0 = time.monotonic()
        session = store.begin_session("bench-vm")
        ids: dict[int, bytes] = {}
        batch: list[tuple[bytes, bytes]] = []
        for i in range(nblocks):
            if rng.random() >= args.fill:
                continue
            head = i.to_bytes(8, "little") + pool[i % 64][8:]
            data = head + head
            cid = cf.chunk_id(id_key, data)
            ids[i] = cid
            batch.append((cid, cf.encode_chunk(data, key.aead_key if key else None)))
            if len(batch) >= 256:
                store.put_chunks(session, batch)
                batch = []
        store.put_chunks(session, batch)
        point = store.commit_point(session, "bench-vm", [DiskDelta(nblocks * cf.BLOCK_SIZE, ids)], None,
                                   "crash", time.time())
        store.end_session(session)
        fill_s = time.monotonic() - t0
        del ids, batch
        os.sync()  # the fill's own writeback must not be charged to materialising
        rss_before = _rss_mib()
        out = root / "disk0.vhd"
        t0 = time.monotonic()
        keys = check_key(store, point, id_key, key)
        res = materialise_disk(store, point, 0, str(out), keys)
        took = time.monotonic() - t0
        gib = nblocks * cf.BLOCK_SIZE / 1024**3
        print(f"disk {gib:.2f} GiB, {res.blocks_written} blocks written ({res.bytes_written / 1024**3:.2f} GiB), "
              f"encrypted={bool(key)}, store filled in {fill_s:.1f} s")
        print(f"materialise: {took:.2f} s = {took / gib:.2f} s/GiB = {res.bytes_written / took / 1e6:.0f} MB/s")
        print(f"peak RSS: {rss_before:.0f} MiB before materialising, {_rss_mib():.0f} MiB after")
        out.unlink()
        for flags in ((), ("oflag=direct",)):
            try:
                peer = _dd_seconds(root / "dd.img", res.bytes_written, *flags)
            except subprocess.CalledProcessError:
                continue  # tmpfs refuses oflag=direct
            name = " ".join(("dd conv=fsync", *flags))
            print(f"peer: {name} of {res.bytes_written / 1024**3:.2f} GiB on the same filesystem: {peer:.2f} s "
                  f"= {res.bytes_written / peer / 1e6:.0f} MB/s; materialise time / dd time = {took / peer:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
