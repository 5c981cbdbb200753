"""verify() finds damage and names the point, disk and block; the index rebuilds from packs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from asrclock import FakeClock
from asrerrors import DataCorrupt
from cloudsvc.vaultstore import Backend, LocalDirBackend
from cloudsvc.vaultstore.packfile import KIND_NODE
from tests.vaultstore.diskdata import ID_KEY, commit_full, export, make_store, random_disk


def _flip(backend: Backend, pack: str, offset: int) -> None:
    data = bytearray(backend.get(pack))
    data[offset] ^= 0x40
    backend.put(pack, bytes(data))


def test_flipped_byte_in_a_chunk_names_point_disk_block(
    backend: Backend, tmp_path: Path, clock: FakeClock
) -> None:
    rng = random.Random(5)
    store = make_store(backend, tmp_path / "idx.db", clock)
    disks = [random_disk(rng, 12, fill=1.0), random_disk(rng, 20, fill=1.0)]
    point = commit_full(store, "vm", disks, clock.now())
    assert store.verify(point.point_id, ID_KEY) == []
    victim = dict(store.block_map(point.point_id, 1))[13]
    loc = store.db.lookup([victim])[victim]
    _flip(backend, loc.pack, loc.offset + loc.length // 2)
    damage = store.verify(point.point_id, ID_KEY)
    assert [(d.point_id, d.disk_index, d.block_index, d.chunk_id) for d in damage] == [
        (point.point_id, 1, 13, victim)
    ]
    assert "hash" in damage[0].what
    with pytest.raises(DataCorrupt, match="disk 1 block 13"):
        list(store.read_frames(point.point_id, 1))
    assert export(store, point.point_id, 0, disks[0].size) == disks[0].image()


def test_damaged_tree_node_and_missing_pack(tmp_path: Path, clock: FakeClock) -> None:
    rng = random.Random(6)
    backend = LocalDirBackend(tmp_path / "a")
    store = make_store(backend, tmp_path / "idx.db", clock)
    disk = random_disk(rng, 30, fill=1.0)
    point = commit_full(store, "vm", [disk], clock.now())
    leaf = store.db.query(
        "SELECT id, pack, offset FROM chunks WHERE kind = ? ORDER BY offset LIMIT 1", (KIND_NODE,)
    )[0]
    _flip(backend, leaf[1], leaf[2] + 30)
    damage = store.verify(point.point_id)
    assert any(d.chunk_id == leaf[0] and "tree node" in d.what for d in damage)
    # A pack that disappeared: every block in it is reported.
    chunk_pack = store.db.query("SELECT pack FROM chunks WHERE kind = 0 LIMIT 1")[0][0]
    backend.delete(chunk_pack)
    damage = store.verify(point.point_id)
    assert any("missing" in d.what for d in damage)


def test_index_rebuilds_from_pack_trailers(backend: Backend, tmp_path: Path, clock: FakeClock) -> None:
    rng = random.Random(7)
    store = make_store(backend, tmp_path / "idx.db", clock)
    disk = random_disk(rng, 25)
    point = commit_full(store, "vm", [disk], clock.now())
    rows = sorted(store.db.query("SELECT * FROM chunks"))
    with store.db.tx() as conn:
        conn.execute("DELETE FROM chunks")
        conn.execute("DELETE FROM packs")
    assert store.verify(point.point_id) != []
    assert store.rebuild_index() == len({r[2] for r in rows})
    assert sorted(store.db.query("SELECT * FROM chunks")) == rows
    assert store.verify(point.point_id) == []
    assert export(store, point.point_id, 0, disk.size) == disk.image()
