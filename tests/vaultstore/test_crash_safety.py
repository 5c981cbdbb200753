"""Crash safety by fault injection: the backend fails at each put/delete of a commit and of a
garbage collection (before the call, or after it took effect); the process "dies" (its store
object is dropped) and a new one reopens the same account and index. No acknowledged point may
be lost, and verify must stay clean."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from asrclock import FakeClock
from asrerrors import StorageError
from cloudsvc.vaultstore import DiskDelta, FaultyBackend, LocalDirBackend, PointInfo, VaultStore
from tests.vaultstore.diskdata import (
    Disk,
    cid,
    commit_changes,
    commit_full,
    export,
    make_block,
    make_store,
    random_disk,
    upload,
)

PACK = 60_000


def _setup(root: Path, clock: FakeClock) -> tuple[FaultyBackend, VaultStore, Disk, PointInfo]:
    rng = random.Random(10)
    faulty = FaultyBackend(LocalDirBackend(root / "acct"))
    store = make_store(faulty, root / "idx.db", clock, pack_size=PACK)
    disk = random_disk(rng, 12, fill=1.0)
    return faulty, store, disk, commit_full(store, "vm", [disk], 1.9e9)


def _next_cycle(store: VaultStore, disk: Disk, base: str, at: float) -> PointInfo:
    rng = random.Random(11)
    changes = {i: make_block(rng) for i in (1, 4, 7, 9)}
    return commit_changes(store, "vm", [disk.size], [changes], base, at)


def _check(store: VaultStore, points: dict[str, bytes], size: int) -> None:
    for pid, image in points.items():
        assert store.verify(pid) == []
        assert export(store, pid, 0, size) == image


def _expected_images(tmp_path: Path, clock: FakeClock) -> tuple[int, int, dict[str, bytes]]:
    faulty, store, disk, p1 = _setup(tmp_path / "ref", clock)
    calls = faulty.calls["put"]
    p2 = _next_cycle(store, disk, p1.point_id, 2e9)
    steps = faulty.calls["put"] - calls
    images = {p1.point_id: disk.image()}
    images[p2.point_id] = export(store, p2.point_id, 0, disk.size)
    return steps, disk.size, images


@pytest.mark.parametrize("after", [False, True])
def test_commit_survives_failure_at_every_put(tmp_path: Path, clock: FakeClock, after: bool) -> None:
    steps, size, images = _expected_images(tmp_path, clock)
    assert steps >= 3  # several chunk packs, then the tree-node pack
    for k in range(steps):
        root = tmp_path / f"run{k}"
        faulty, store, disk, p1 = _setup(root, clock)
        faulty.fail("put", skip=k, after=after)
        with pytest.raises(StorageError):
            _next_cycle(store, disk, p1.point_id, 2e9)
        reopened = make_store(faulty.inner, root / "idx.db", clock, pack_size=PACK)
        assert [p.point_id for p in reopened.list_points("vm")] == [p1.point_id]
        _check(reopened, {p1.point_id: images[p1.point_id]}, size)
        # The agent retries the whole cycle: it succeeds and yields the same point.
        p2 = _next_cycle(reopened, disk, p1.point_id, 2e9)
        assert p2.point_id in images
        clock.advance(7200)  # past the grace period for abandoned 'writing' packs
        reopened.gc()
        _check(reopened, images, size)


@pytest.mark.parametrize("method", ["put", "delete"])
@pytest.mark.parametrize("after", [False, True])
def test_gc_survives_failure_at_every_step(
    tmp_path: Path, clock: FakeClock, method: str, after: bool
) -> None:
    def scenario(root: Path) -> tuple[FaultyBackend, VaultStore, PointInfo, bytes, int]:
        faulty, store, disk, p1 = _setup(root, clock)
        p2 = _next_cycle(store, disk, p1.point_id, 2e9)
        image = export(store, p2.point_id, 0, disk.size)
        store.delete_point(p1.point_id)
        return faulty, store, p2, image, disk.size

    faulty, store, _p2, _image, _size = scenario(tmp_path / "ref")
    before = faulty.calls[method]
    store.gc()
    steps = faulty.calls[method] - before
    expected_bytes = store.storage_bytes()
    assert steps >= 1
    for k in range(steps):
        root = tmp_path / f"run{k}"
        faulty, store, p2, image, size = scenario(root)
        faulty.fail(method, skip=k, after=after)
        with pytest.raises(StorageError):
            store.gc()
        reopened = make_store(faulty.inner, root / "idx.db", clock, pack_size=PACK)
        _check(reopened, {p2.point_id: image}, size)
        clock.advance(7200)
        reopened.gc()
        _check(reopened, {p2.point_id: image}, size)
        assert reopened.storage_bytes() == expected_bytes
        assert sorted(faulty.inner.list("packs/")) == sorted(r.name for r in reopened.db.packs())


def test_background_seal_failure_is_reported_and_the_upload_can_be_retried(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Full packs are sealed on a background thread. A put that fails there surfaces at the
    next flush/commit as a StorageError; the blobs it held are then missing again (not
    reported as present), so the agent's retry of the cycle re-sends them and commits."""
    faulty, store, disk, p1 = _setup(tmp_path, clock)
    rng = random.Random(12)
    changes = {i: make_block(rng) for i in range(12)}  # several packs' worth
    session = store.begin_session("vm")
    faulty.fail("put", skip=0)
    ids = {i: cid(b) for i, b in changes.items()}
    with pytest.raises(StorageError):  # at a later put_chunks, or at the flush
        upload(store, session, changes)
        store.flush()
    faulty.clear()
    lacking = set(store.missing(ids.values(), session_id=session))
    assert lacking, "blobs of the failed pack must be asked for again"
    upload(store, session, changes)
    p2 = store.commit_point(session, "vm", [DiskDelta(disk.size, ids)], p1.point_id, "crash", 2e9)
    assert store.verify(p2.point_id) == []
    for i, block in changes.items():
        assert export(store, p2.point_id, 0, disk.size)[i * len(block):(i + 1) * len(block)] == block
