"""verify() finds damage and names the point, disk and block, and the pack when the pack itself
is damaged (borg-style: one flipped byte in each part of a stored pack)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from asrclock import FakeClock
from asrerrors import DataCorrupt
from cloudsvc.vaultstore import Backend, LocalDirBackend
from cloudsvc.vaultstore.packfile import ENTRY, FOOTER, KIND_CHUNK, KIND_NODE, PACK_MAGIC
from tests.vaultstore.diskdata import ID_KEY, commit_full, export, flip_byte, make_store, random_disk

_flip = flip_byte


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


# Where to damage a pack (offset from its start, given the pack's size and entry count), and
# what verify must then say about it.
PLACES = {
    "header": (lambda size, n: 3, "header magic"),
    "frame": (lambda size, n: len(PACK_MAGIC) + 20, "does not match its stored hash"),
    "trailer entry": (lambda size, n: size - FOOTER.size - n * ENTRY.size + ENTRY.size // 2, "checksum"),
    "trailer digest": (lambda size, n: size - 20, "checksum"),
    "end magic": (lambda size, n: size - 3, "end magic"),
}


@pytest.mark.parametrize("place", list(PLACES))
def test_a_flipped_byte_anywhere_in_a_pack_is_found_and_names_the_pack(
    backend: Backend, tmp_path: Path, clock: FakeClock, place: str
) -> None:
    rng = random.Random(15)
    store = make_store(backend, tmp_path / "idx.db", clock)
    disk = random_disk(rng, 16, fill=1.0)
    point = commit_full(store, "vm", [disk], clock.now())
    clean = store.verify(point.point_id, ID_KEY)
    packs = {r.name for r in store.db.packs()}
    assert clean == [] and clean.packs_checked == len(packs) > 1 and clean.blocks_checked == 16
    victim = store.db.query("SELECT pack FROM chunks WHERE kind = ? ORDER BY pack LIMIT 1", (KIND_CHUNK,))[0][0]
    entries = store.db.query("SELECT COUNT(*) FROM chunks WHERE pack = ?", (victim,))[0][0]
    offset, expected = PLACES[place]
    _flip(backend, victim, offset(backend.stat(victim).size, entries))
    damage = store.verify(point.point_id, ID_KEY)
    assert damage, f"a flipped byte in the {place} went unnoticed"
    assert all(d.point_id == point.point_id and d.disk_index == 0 for d in damage)
    assert any(victim in d.what and expected in d.what for d in damage), [d.what for d in damage]
    # Damage in one pack is reported against that pack only.
    assert all(victim in d.what for d in damage), [d.what for d in damage]
    assert damage.packs_checked == len(packs)


def test_an_index_row_that_disagrees_with_the_trailer_is_reported(tmp_path: Path, clock: FakeClock) -> None:
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    disk = random_disk(random.Random(16), 8, fill=1.0)
    point = commit_full(store, "vm", [disk], clock.now())
    victim = dict(store.block_map(point.point_id, 0))[5]
    loc = store.db.lookup([victim])[victim]
    with store.db.tx() as conn:  # the blob still reads fine; only the row's kind is wrong
        conn.execute("UPDATE chunks SET kind = ? WHERE id = ?", (KIND_NODE, victim))
    damage = store.verify(point.point_id)
    assert [(d.block_index, d.chunk_id) for d in damage] == [(5, victim)]
    assert loc.pack in damage[0].what and "disagrees with the pack's trailer" in damage[0].what
