"""Vault store throughput: encode (hash + zstd-1 + AES-256-GCM) per 64 KiB block, then commit
and read back a 1 GiB synthetic disk on the local-directory backend.

    .venv/bin/python bench/store_pipeline.py [--gib 1.0] [--dir /tmp] [--index sqlite|postgresql|both]

``--index both`` runs it twice in one run, the store's index in SQLite and then in a schema of a
throw-away PostgreSQL server (``tests/pgserver.py``; where a blob account's index lives when the
metadata is in PostgreSQL): the cost of the index in the data path, engine beside engine.

Synthetic data: 60% of blocks half random / half repeated (zstd ratio ~2), 40% zero blocks.
Prints figures only; nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import chunkfmt as cf
from asrclock import SystemClock
from cloudsvc.vaultstore import DiskDelta, LocalDirBackend, VaultStore
from cloudsvc.vaultstore.indexdb import IndexLocation, PgIndex


def _block(rng: random.Random) -> bytes:
    head = rng.randbytes(cf.BLOCK_SIZE // 2)
    return head + head[: cf.BLOCK_SIZE // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--index", choices=["sqlite", "postgresql", "both"], default="sqlite")
    args = ap.parse_args()
    engines = ["sqlite", "postgresql"] if args.index == "both" else [args.index]
    pg = None
    try:
        for engine in engines:
            if engine == "postgresql" and pg is None:
                sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run as a script
                from tests.pgserver import PgServer

                pg = PgServer().init()
            print(f"--- index in {engine}")
            run(args, pg.new_database() if engine == "postgresql" and pg else "")
    finally:
        if pg is not None:
            pg.destroy()


def run(args: argparse.Namespace, pg_url: str) -> None:
    nblocks = int(args.gib * 1024**3) // cf.BLOCK_SIZE
    key = cf.CustomerKey.generate()
    rng = random.Random(0)
    pool = [_block(rng) for _ in range(256)]
    zero = bytes(cf.BLOCK_SIZE)

    # Distinct content per block: a counter stamped into a pooled block.
    def block(i: int) -> bytes:
        if i % 5 >= 3:
            return zero
        b = pool[i % len(pool)]
        return i.to_bytes(8, "little") + b[8:]

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        index: IndexLocation = PgIndex(pg_url, "ix_bench") if pg_url else f"{tmp}/idx.db"
        store = VaultStore(LocalDirBackend(Path(tmp) / "acct"), index, SystemClock())
        session = store.begin_session("bench-vm")
        changes: dict[int, bytes] = {}
        t_enc = t_put = 0.0
        stored = raw = 0
        batch: list[tuple[bytes, bytes]] = []
        for i in range(nblocks):
            data = block(i)
            t0 = time.perf_counter()
            if cf.is_zero_block(data):
                changes[i] = cf.ZERO_ID
                t_enc += time.perf_counter() - t0
                continue
            cid = cf.chunk_id(key.id_key, data)
            frame = cf.encode_chunk(data, key.aead_key)
            t_enc += time.perf_counter() - t0
            raw += len(data)
            stored += len(frame)
            changes[i] = cid
            batch.append((cid, frame))
            if len(batch) >= 64:  # one 4 MiB gRPC message's worth
                t0 = time.perf_counter()
                store.put_chunks(session, batch)
                t_put += time.perf_counter() - t0
                batch = []
        t0 = time.perf_counter()
        store.put_chunks(session, batch)
        size = nblocks * cf.BLOCK_SIZE
        point = store.commit_point(session, "bench-vm", [DiskDelta(size, changes)], None, "crash",
                                   time.time())
        t_put += time.perf_counter() - t0
        mib = size / 2**20
        print(f"disk {mib:.0f} MiB, {nblocks} blocks, {raw / 2**20:.0f} MiB non-zero, "
              f"stored {stored / 2**20:.0f} MiB")
        print(f"encode (zero check+BLAKE3+zstd-1+AES-GCM): {raw / 2**20 / t_enc:.0f} MiB/s "
              "of non-zero data, one thread")
        print(f"put_chunks+commit (pack write+fsync+index): {stored / 2**20 / t_put:.0f} MiB/s "
              f"stored, {mib / t_put:.0f} MiB/s of disk")

        t0 = time.perf_counter()
        n = sum(1 for _ in store.read_frames(point.point_id, 0))
        t_read = time.perf_counter() - t0
        print(f"read_frames (hash-checked): {mib / t_read:.0f} MiB/s of disk ({n} blocks)")
        t0 = time.perf_counter()
        for _b, chunk, stored_frame in store.read_frames(point.point_id, 0):
            if stored_frame is not None:
                cf.decode_chunk(stored_frame, key.aead_key, chunk=chunk)
        t_dec = time.perf_counter() - t0
        print(f"read_frames+decrypt+decompress: {mib / t_dec:.0f} MiB/s of disk")
        t0 = time.perf_counter()
        damage = store.verify(point.point_id)
        print(f"verify: {mib / (time.perf_counter() - t0):.0f} MiB/s of disk, "
              f"{len(damage)} damaged")

        # Incremental point: 1% of blocks change.
        delta: dict[int, bytes] = {}
        batch = []
        for i in range(0, nblocks, 100):
            data = _block(rng)
            cid = cf.chunk_id(key.id_key, data)
            delta[i] = cid
            batch.append((cid, cf.encode_chunk(data, key.aead_key)))
        before = store.storage_bytes()
        t0 = time.perf_counter()
        store.put_chunks(session, batch)
        p2 = store.commit_point(session, "bench-vm", [DiskDelta(size, delta)], point.point_id,
                                "crash", time.time() + 1)
        dt = time.perf_counter() - t0
        grew = store.storage_bytes() - before
        print(f"1% incremental point: {dt * 1000:.0f} ms, storage +{grew / 2**20:.1f} MiB "
              f"({len(delta)} chunks), point {p2.point_id}")
        store.delete_point(point.point_id)
        t0 = time.perf_counter()
        stats = store.gc()
        print(f"gc after deleting the first point: {time.perf_counter() - t0:.2f} s, "
              f"{stats.bytes_before / 2**20:.0f} -> {stats.bytes_after / 2**20:.0f} MiB")
        store.end_session(session)
        store.close()


if __name__ == "__main__":
    main()
