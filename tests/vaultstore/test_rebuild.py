"""The chunk index rebuilds from the packs' trailers alone; a pack with an unreadable trailer is
left out and named instead of failing the rebuild; points (not derivable) are kept."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

from asrclock import FakeClock
from cloudsvc.vaultstore import Backend, LocalDirBackend, VaultStore
from cloudsvc.vaultstore.packfile import ENTRY, FOOTER
from tests.vaultstore.diskdata import (
    commit_changes,
    commit_full,
    flip_byte,
    make_block,
    make_store,
    point_image,
    random_disk,
)


def _two_vms(store: VaultStore, clock: FakeClock) -> dict[str, list[bytes]]:
    rng = random.Random(31)
    images = {}
    for vm in ("vm-a", "vm-b"):
        disks = [random_disk(rng, 20, fill=0.7), random_disk(rng, 6, fill=1.0, tail=100)]
        p = commit_full(store, vm, disks, clock.now())
        images[p.point_id] = point_image(store, p)
        changes = {2: make_block(rng), 17: make_block(rng)}
        p2 = commit_changes(store, vm, [disks[0].size, disks[1].size], [changes, {}], p.point_id, clock.now() + 300)
        images[p2.point_id] = point_image(store, p2)
    return images


def _rows(store: VaultStore) -> list[tuple[object, ...]]:
    return sorted(tuple(r) for r in store.db.query('SELECT id, kind, pack, "offset", length, hash FROM chunks'))


def _check_every_point(store: VaultStore, images: dict[str, list[bytes]]) -> None:
    assert sorted(p.point_id for p in store.list_points()) == sorted(images)
    for pid, disks in images.items():
        assert store.verify(pid) == []
        assert point_image(store, store.get_point(pid)) == disks


def test_rebuild_after_losing_the_chunk_and_pack_tables(backend: Backend, tmp_path: Path, clock: FakeClock) -> None:
    store = make_store(backend, tmp_path / "idx.db", clock)
    images = _two_vms(store, clock)
    rows = _rows(store)
    packs = sorted((r.name, r.size) for r in store.db.packs())
    with store.db.tx() as conn:
        conn.execute("DELETE FROM chunks")
        conn.execute("DELETE FROM packs")
    assert store.verify(next(iter(images))) != []
    result = store.rebuild_index()
    assert (result.packs, result.blobs, result.damaged_packs) == (len(packs), len(rows), [])
    assert _rows(store) == rows
    assert sorted((r.name, r.size) for r in store.db.packs()) == packs
    assert {r.state for r in store.db.packs()} == {"live"}
    _check_every_point(store, images)
    store.gc()  # the rebuilt index drives a collection without losing anything
    _check_every_point(store, images)


def test_rebuild_into_a_new_index_keeping_the_points(tmp_path: Path, clock: FakeClock) -> None:
    """The index DB itself is lost; its point rows survive in a copy (the cloud's metadata
    records the same points). A fresh index with those rows, rebuilt, serves every point."""
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    images = _two_vms(store, clock)
    store.close()
    shutil.copy(tmp_path / "idx.db", tmp_path / "copy.db")
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"idx.db{suffix}").unlink(missing_ok=True)
    fresh = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    fresh.db.query("ATTACH DATABASE ? AS old", (str(tmp_path / "copy.db"),))
    with fresh.db.tx() as conn:
        conn.execute("INSERT INTO points SELECT * FROM old.points")
        conn.execute("INSERT INTO point_disks SELECT * FROM old.point_disks")
    fresh.db.query("DETACH DATABASE old")
    result = fresh.rebuild_index()
    assert result.damaged_packs == [] and result.packs == len(list(fresh.backend.list("packs/")))
    _check_every_point(fresh, images)


def test_a_pack_with_an_unreadable_trailer_is_left_out_and_named(tmp_path: Path, clock: FakeClock) -> None:
    backend = LocalDirBackend(tmp_path / "a")
    store = make_store(backend, tmp_path / "idx.db", clock)
    images = _two_vms(store, clock)
    rows = _rows(store)
    victim = rows[0][2]
    assert isinstance(victim, str)
    entries = sum(1 for r in rows if r[2] == victim)
    size = backend.stat(victim).size
    flip_byte(backend, victim, size - FOOTER.size - entries * ENTRY.size + 40)  # inside the trailer
    with store.db.tx() as conn:
        conn.execute("DELETE FROM chunks")
    result = store.rebuild_index()
    assert result.damaged_packs == [victim]
    assert result.blobs == len(rows) - entries and result.packs == len(store.db.packs())
    assert _rows(store) == [r for r in rows if r[2] != victim]
    hurt = [pid for pid in images if store.verify(pid) != []]
    assert hurt, "no point uses the damaged pack"
    for pid in hurt:
        assert all("not in the index" in d.what for d in store.verify(pid))
    for pid in set(images) - set(hurt):
        assert point_image(store, store.get_point(pid)) == images[pid]


def test_rebuild_keeps_points_sessions_and_pins(tmp_path: Path, clock: FakeClock) -> None:
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    images = _two_vms(store, clock)
    session = store.begin_session("vm-a")
    pid = next(iter(images))
    store.pin_until_released(pid, "recovered-vm rv-1")
    store.rebuild_index()
    assert sorted(p.point_id for p in store.list_points()) == sorted(images)
    assert [p.holder for p in store.pins()] == ["recovered-vm rv-1"]
    assert store.db.session_vm(session) == "vm-a"
    db = sqlite3.connect(str(tmp_path / "idx.db"))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
