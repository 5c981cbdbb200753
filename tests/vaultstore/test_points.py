"""Committing recovery points, exporting them, and sharing subtrees between them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import chunkfmt as cf
from asrclock import FakeClock
from asrerrors import NotFound, StateConflict, StorageError
from cloudsvc.vaultstore import Backend, DiskDelta
from tests.vaultstore.diskdata import (
    cid,
    commit_changes,
    commit_full,
    export,
    make_block,
    make_store,
    random_disk,
)


def test_commit_and_export_equal_written_blocks(
    backend: Backend, tmp_path: Path, clock: FakeClock
) -> None:
    rng = random.Random(1)
    store = make_store(backend, tmp_path / "idx.db", clock)
    disks = [random_disk(rng, 40, tail=1000), random_disk(rng, 9, fill=0.3)]
    point = commit_full(store, "vm1", disks, clock.now())
    assert [d.virtual_size for d in point.disks] == [disks[0].size, disks[1].size]
    assert len(store.db.packs()) > 2  # tiny packs: the data spans several
    for i, disk in enumerate(disks):
        assert export(store, point.point_id, i, disk.size) == disk.image()
        assert dict(store.block_map(point.point_id, i)) == {
            b: cid(disk.blocks[b]) if b in disk.blocks else cf.ZERO_ID for b in range(disk.count)
        }
    # An incremental point: two changed blocks, one block zeroed.
    changes = {3: make_block(rng), 39: make_block(rng, disks[0].block_len(39)), 5: bytes(65536)}
    p2 = commit_changes(store, "vm1", [disks[0].size, disks[1].size], [changes, {}],
                        point.point_id, clock.now() + 300)
    disks[0].blocks.update(changes)
    assert export(store, p2.point_id, 0, disks[0].size) == disks[0].image()
    assert p2.disks[1].root == point.disks[1].root
    assert [p.point_id for p in store.list_points("vm1")] == [point.point_id, p2.point_id]
    assert store.verify(p2.point_id, id_key=None) == []


def test_one_changed_block_adds_only_the_path(tmp_path: Path, clock: FakeClock) -> None:
    rng = random.Random(2)
    from cloudsvc.vaultstore import LocalDirBackend

    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    disk = random_disk(rng, 256, fill=0.9)  # fanout 4: 4 levels
    p1 = commit_full(store, "vm", [disk], clock.now())
    before = store.db.query("SELECT kind, COUNT(*) FROM chunks GROUP BY kind")
    p2 = commit_changes(store, "vm", [disk.size], [{100: make_block(rng)}], p1.point_id, 1e9 + 1)
    after = store.db.query("SELECT kind, COUNT(*) FROM chunks GROUP BY kind")
    added = {k: n - dict(before).get(k, 0) for k, n in after}
    assert added == {0: 1, 1: 4}  # one chunk, one node per level (depth 4)
    assert p2.disks[0].root != p1.disks[0].root


def test_resize_grow_and_shrink(tmp_path: Path, clock: FakeClock) -> None:
    from cloudsvc.vaultstore import LocalDirBackend

    rng = random.Random(3)
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    disk = random_disk(rng, 10, fill=1.0)
    p1 = commit_full(store, "vm", [disk], 1000.0)
    for size in (70 * cf.BLOCK_SIZE + 512, 3 * cf.BLOCK_SIZE - 7, 17 * cf.BLOCK_SIZE):
        p = commit_changes(store, "vm", [size], [{}], p1.point_id, 1000.0 + size)
        img = disk.image()[:size]
        assert export(store, p.point_id, 0, size) == img + bytes(size - len(img))
        assert store.verify(p.point_id) == []


def test_commit_refuses_unstored_chunks_and_wrong_owner(tmp_path: Path, clock: FakeClock) -> None:
    from cloudsvc.vaultstore import LocalDirBackend

    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    session = store.begin_session("vm")
    with pytest.raises(StorageError, match="not stored"):
        store.commit_point(session, "vm", [DiskDelta(cf.BLOCK_SIZE, {0: b"\x01" * 32})],
                           None, "crash", 1.0)
    assert store.list_points("vm") == []
    with pytest.raises(StateConflict):
        store.commit_point(session, "other", [], None, "crash", 1.0)
    with pytest.raises(NotFound):
        store.commit_point(session, "vm", [], "rp-none", "crash", 1.0)
    store.end_session(session)
    with pytest.raises(NotFound):
        store.put_chunks(session, [])


def test_retried_commit_is_idempotent_and_zero_never_missing(
    tmp_path: Path, clock: FakeClock
) -> None:
    from cloudsvc.vaultstore import LocalDirBackend

    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    data = make_block(random.Random(4))
    session = store.begin_session("vm")
    assert store.missing([cf.ZERO_ID, cid(data), cid(data)]) == [cid(data)]
    store.put_chunks(session, [(cid(data), cf.encode_chunk(data, None))])
    store.put_chunks(session, [(cid(data), cf.encode_chunk(data, None))])
    delta = [DiskDelta(2 * cf.BLOCK_SIZE, {1: cid(data)})]
    a = store.commit_point(session, "vm", delta, None, "app", 5.0)
    b = store.commit_point(session, "vm", delta, None, "app", 5.0)
    assert a == b and len(store.list_points("vm")) == 1 and a.kind == "app"
    assert store.missing([cid(data)]) == []
    assert store.get_point(a.point_id) == a
