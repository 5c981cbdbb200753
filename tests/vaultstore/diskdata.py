"""Synthetic disks for the vault store tests: block contents, their ids and frames."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import chunkfmt as cf
from asrclock import FakeClock
from cloudsvc.vaultstore import Backend, DiskDelta, PointInfo, VaultStore
from cloudsvc.vaultstore.blobbackend import BlobBackend
from cloudsvc.vaultstore.indexdb import IndexLocation, PgIndex
from tests import pgserver

ID_KEY = cf.vault_id_key("vault-test")


def make_block(rng: random.Random, length: int = cf.BLOCK_SIZE) -> bytes:
    """Half random, half repeated: compressible but distinct."""
    head = rng.randbytes(length // 2)
    return (head + head[:64] * (length // 128 + 1))[:length]


@dataclass
class Disk:
    size: int
    blocks: dict[int, bytes] = field(default_factory=dict)  # absent = zero

    @property
    def count(self) -> int:
        return -(-self.size // cf.BLOCK_SIZE)

    def block_len(self, i: int) -> int:
        return min(cf.BLOCK_SIZE, self.size - i * cf.BLOCK_SIZE)

    def image(self) -> bytes:
        out = bytearray(self.size)
        for i, data in self.blocks.items():
            out[i * cf.BLOCK_SIZE : i * cf.BLOCK_SIZE + len(data)] = data
        return bytes(out)


def random_disk(rng: random.Random, nblocks: int, fill: float = 0.6, tail: int = 0) -> Disk:
    size = nblocks * cf.BLOCK_SIZE - tail
    disk = Disk(size)
    for i in range(nblocks):
        if rng.random() < fill:
            disk.blocks[i] = make_block(rng, disk.block_len(i))
    return disk


def cid(data: bytes) -> bytes:
    return cf.ZERO_ID if cf.is_zero_block(data) else cf.chunk_id(ID_KEY, data)


def upload(store: VaultStore, session: str, blocks: dict[int, bytes]) -> dict[int, bytes]:
    """Upload what the store lacks, as the agent does; returns block -> id."""
    ids = {i: cid(b) for i, b in blocks.items()}
    lacking = set(store.missing(ids.values(), session_id=session))
    frames = {}
    for i, b in blocks.items():
        if ids[i] in lacking and ids[i] not in frames:
            frames[ids[i]] = cf.encode_chunk(b, None)
    store.put_chunks(session, list(frames.items()))
    return ids


def commit_full(store: VaultStore, vm: str, disks: list[Disk], at: float) -> PointInfo:
    session = store.begin_session(vm)
    deltas = [DiskDelta(d.size, upload(store, session, d.blocks)) for d in disks]
    point = store.commit_point(session, vm, deltas, None, "crash", at)
    store.end_session(session)
    return point


def commit_changes(
    store: VaultStore, vm: str, sizes: list[int], changes: list[dict[int, bytes]],
    base: str, at: float, kind: str = "crash",
) -> PointInfo:
    session = store.begin_session(vm)
    deltas = [DiskDelta(s, upload(store, session, c)) for s, c in zip(sizes, changes, strict=True)]
    point = store.commit_point(session, vm, deltas, base, kind, at)  # type: ignore[arg-type]
    store.end_session(session)
    return point


def export(store: VaultStore, point_id: str, disk_index: int, size: int) -> bytes:
    out = bytearray(size)
    for block, chunk, frame in store.read_frames(point_id, disk_index):
        if frame is not None:
            data = cf.decode_chunk(frame, None, chunk=chunk)
            start = block * cf.BLOCK_SIZE
            # After a shrink the last block's chunk may be longer than the disk: truncate.
            data = data[: size - start]
            out[start : start + len(data)] = data
    return bytes(out)


_pg_database: list[str] = []   # the session's database for indexes in PostgreSQL, made on first use


def index_for(backend: Backend, db: Path) -> IndexLocation:
    """Where the store's index lives, as the cloud service chooses: with ASR_TEST_DATABASE=postgresql
    a blob account's index is a schema of PostgreSQL (one per ``db`` path, so a test that reopens
    the store at the same path finds the same index); otherwise the SQLite file ``db``."""
    inner: object = backend
    while hasattr(inner, "inner"):   # through wrappers (error contract, fault injection)
        inner = inner.inner
    if not (pgserver.wanted() and isinstance(inner, BlobBackend)):
        return str(db)
    if not _pg_database:
        _pg_database.append(pgserver.server().new_database())
    return PgIndex(_pg_database[0], "ix_test_" + hashlib.blake2b(str(db).encode(), digest_size=8).hexdigest())


def make_store(backend: Backend, db: Path, clock: FakeClock, **kw: object) -> VaultStore:
    """A store with tiny packs and a small fanout, so little data exercises many packs and a
    tree several levels deep."""
    options: dict[str, object] = {"pack_size": 150_000, "fanout": 4, "min_dead_fraction": 0.0}
    options.update(kw)
    return VaultStore(backend, index_for(backend, db), clock, **options)  # type: ignore[arg-type]


def flip_byte(backend: Backend, name: str, offset: int) -> None:
    """Damage one byte of a stored object (borg's corruption helper); negative offsets count
    from the end."""
    data = bytearray(backend.get(name))
    data[offset] ^= 0x40
    backend.put(name, bytes(data))


def point_image(store: VaultStore, point: PointInfo) -> list[bytes]:
    """Every disk of a point, exported."""
    return [export(store, point.point_id, d.disk_index, d.virtual_size) for d in point.disks]
