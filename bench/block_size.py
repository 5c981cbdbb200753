"""Why BLOCK_SIZE is 64 KiB: the trade-off measured for candidate block sizes.

    .venv/bin/python bench/block_size.py [--mib 256]

For each candidate size: (1) the data path's per-block encode cost (zero check + keyed BLAKE3
+ zstd-1 + AES-256-GCM) over the same ``--mib`` of half-compressible data, one thread;
(2) the bytes an incremental cycle ships after a random 4 KiB write workload touching 1% of a
4 GiB disk (each dirtied block is shipped whole; compression ignored); (3) the metadata a
1 TiB disk costs (one 32-byte id per block in the tree, one index row per stored chunk).
The peer is the smallest candidate: the ratios show what a bigger block buys and costs.
Figures only; nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import random
import time

import chunkfmt as cf

SIZES = [16 * 1024, 32 * 1024, 64 * 1024, 128 * 1024, 256 * 1024, 1024 * 1024]
DISK = 4 * 1024**3
WRITE = 4096


def encode_mib_s(data: bytes, size: int, key: cf.CustomerKey) -> float:
    id_key = key.id_key
    t0 = time.perf_counter()
    for off in range(0, len(data), size):
        block = data[off : off + size]
        if cf.is_zero_block(block):
            continue
        cf.chunk_id(id_key, block)
        cf.encode_chunk(block, key.aead_key)
    return len(data) / (time.perf_counter() - t0) / 2**20


def shipped_bytes(size: int, writes: list[int]) -> int:
    return len({w // size for w in writes}) * size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    args = ap.parse_args()
    rng = random.Random(0)
    unit = rng.randbytes(512 * 1024)
    data = b"".join(unit[:256 * 1024] + rng.randbytes(256 * 1024) for _ in range(args.mib * 2))
    key = cf.CustomerKey.generate()
    nwrites = int(DISK * 0.01) // WRITE
    writes = [rng.randrange(DISK // WRITE) * WRITE for _ in range(nwrites)]
    written = nwrites * WRITE
    print(f"{args.mib} MiB encoded per size; incremental: {nwrites} random 4 KiB writes "
          f"({written / 2**20:.0f} MiB) on a 4 GiB disk")
    header = ("block", "encode MiB/s", "shipped MiB", "x written", "ids per TiB", "tree MiB/TiB")
    print(" ".join(f"{h:>13}" for h in header))
    for size in SIZES:
        speed = encode_mib_s(data, size, key) if size <= cf.BLOCK_SIZE * 16 else float("nan")
        shipped = shipped_bytes(size, writes)
        ids = 2**40 // size
        print(f"{size // 1024:>11}Ki {speed:>13.0f} {shipped / 2**20:>13.0f} {shipped / written:>13.1f} "
              f"{ids:>13,} {ids * cf.ID_SIZE / 2**20:>13.0f}")


if __name__ == "__main__":
    main()
