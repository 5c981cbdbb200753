"""Vault teardown: ``destroy`` removes every object the store owns and its index DB files, leaves
what is not the store's, and finishes a teardown that crashed half-way when run again."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from asrclock import FakeClock
from asrerrors import StorageError
from cloudsvc.vaultstore import Backend, FaultyBackend, LocalDirBackend, VaultStore, destroy_store
from cloudsvc.vaultstore.indexdb import PgIndex, figures_at
from tests.vaultstore.diskdata import (
    commit_changes,
    commit_full,
    index_for,
    make_block,
    make_store,
    random_disk,
    upload,
)


def _fill(store: VaultStore, clock: FakeClock) -> None:
    rng = random.Random(61)
    disk = random_disk(rng, 20, fill=1.0)
    p = commit_full(store, "vm", [disk], clock.now())
    commit_changes(store, "vm", [disk.size], [{1: make_block(rng)}], p.point_id, clock.now() + 300)
    session = store.begin_session("vm")  # an upload in progress, buffered and unsealed
    upload(store, session, {0: make_block(rng)})


def _db_files(db: Path) -> list[Path]:
    return [p for p in db.parent.iterdir() if p.name.startswith(db.name)]


def _index_exists(backend: Backend, db: Path) -> bool:
    where = index_for(backend, db)
    if isinstance(where, PgIndex):
        return figures_at(where) is not None
    return bool(_db_files(db))


def test_destroy_removes_the_store_and_nothing_else(backend: Backend, tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "idx.db"
    store = make_store(backend, db, clock)
    _fill(store, clock)
    backend.put("recovered/rv-1/disk0.vhd", b"not the store's")  # failover's, beside the packs
    assert len(list(backend.list("packs/"))) > 2 and _index_exists(backend, db)
    store.destroy()
    assert list(backend.list("packs/")) == []
    assert list(backend.list("")) == ["recovered/rv-1/disk0.vhd"]
    assert not _index_exists(backend, db)
    if isinstance(backend, LocalDirBackend):
        assert not (backend.root / "packs").exists()  # no empty directories left either
    destroy_store(backend, index_for(backend, db))  # again: nothing left to do, no error
    assert list(backend.list("")) == ["recovered/rv-1/disk0.vhd"]


def test_a_teardown_that_failed_half_way_is_finished_by_running_it_again(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "idx.db"
    faulty = FaultyBackend(LocalDirBackend(tmp_path / "a"))
    store = make_store(faulty, db, clock)
    _fill(store, clock)
    packs = len(list(faulty.list("packs/")))
    faulty.add_fault("delete").skip(2)  # the third delete fails: the process "dies" there
    with pytest.raises(StorageError):
        store.destroy()
    assert 0 < len(list(faulty.list("packs/"))) == packs - 2
    (tmp_path / "a" / "packs" / "ab").mkdir(parents=True, exist_ok=True)
    (tmp_path / "a" / "packs" / "ab" / "x.tmp-123").write_bytes(b"an interrupted put")
    destroy_store(faulty, str(db))  # run again, without an open store
    assert list(faulty.inner.list("")) == [] and _db_files(db) == []
    assert not (tmp_path / "a" / "packs").exists()
