"""Pins: a point being exported, verified or needed by a failover survives retention (and the
collection after it); a point already gone is NotFound, never DataCorrupt; pins live in the
index DB, so they survive reopening the store, and leased ones expire when nobody renews them."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

import chunkfmt as cf
from asrclock import FakeClock
from asrerrors import NotFound, StateConflict
from cloudsvc.vaultstore import FaultyBackend, LocalDirBackend, PointInfo, RetentionPolicy, VaultStore
from tests.vaultstore.diskdata import Disk, commit_changes, commit_full, make_block, make_store, random_disk

KEEP_LATEST = RetentionPolicy(copy_frequency_s=300, retention_hours=0)
BLOCKS = 300  # more than one read window (256 blocks), so an export reads after retention ran


def _history(store: VaultStore, clock: FakeClock) -> tuple[Disk, list[PointInfo], list[bytes]]:
    """A first point, then three that rewrite blocks on both sides of the first read window:
    the first point's chunks there are its own, and a collection would remove them."""
    rng = random.Random(21)
    disk = random_disk(rng, BLOCKS, fill=0.3)
    points = [commit_full(store, "vm", [disk], clock.now())]
    images = [disk.image()]
    for _ in range(3):
        clock.advance(300)
        changes = {b: make_block(rng) for b in (3, 100, 260, 290, 299)}
        disk.blocks.update(changes)
        points.append(commit_changes(store, "vm", [disk.size], [changes], points[-1].point_id, clock.now()))
        images.append(disk.image())
    return disk, points, images


def _assemble(frames: list[tuple[int, bytes, bytes | None]], size: int) -> bytes:
    out = bytearray(size)
    for block, chunk, frame in frames:
        if frame is not None:
            data = cf.decode_chunk(frame, None, chunk=chunk)
            out[block * cf.BLOCK_SIZE: block * cf.BLOCK_SIZE + len(data)] = data
    return bytes(out)


def test_an_export_outlives_retention_and_collection(tmp_path: Path, clock: FakeClock) -> None:
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    disk, points, images = _history(store, clock)
    export = store.read_frames(points[0].point_id, 0)
    frames = [next(export) for _ in range(10)]  # the export is running: first window read
    deleted = store.apply_retention("vm", KEEP_LATEST)
    assert deleted == [points[1].point_id, points[2].point_id]  # the exported point is kept
    store.gc()
    frames += list(export)  # reads the later windows, whose chunks only the first point had
    assert _assemble(frames, disk.size) == images[0]
    # Once the export is over, its pin is gone and retention takes the point.
    assert store.pins() == []
    assert store.apply_retention("vm", KEEP_LATEST) == [points[0].point_id]


def test_a_verify_outlives_retention_and_collection(tmp_path: Path, clock: FakeClock) -> None:
    faulty = FaultyBackend(LocalDirBackend(tmp_path / "a"))
    store = make_store(faulty, tmp_path / "idx.db", clock)
    _disk, points, _images = _history(store, clock)
    gate = faulty.add_fault("get").skip(3).pause(timeout_s=60)  # in the middle of the verify
    result: list[object] = []
    verifier = threading.Thread(target=lambda: result.append(store.verify(points[0].point_id)))
    verifier.start()
    try:
        assert gate.wait_fired(60)
        assert [p.holder for p in store.pins()] == [f"verify {points[0].point_id}"]
        assert store.apply_retention("vm", KEEP_LATEST) == [points[1].point_id, points[2].point_id]
        store.gc()
    finally:
        gate.release()
        verifier.join(60)
    assert result == [[]]
    assert store.apply_retention("vm", KEEP_LATEST) == [points[0].point_id]


def test_a_point_already_deleted_is_not_found_not_corrupt(tmp_path: Path, clock: FakeClock) -> None:
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    _disk, points, _images = _history(store, clock)
    gone = points[0].point_id
    store.delete_point(gone)
    store.gc()
    with pytest.raises(NotFound, match=gone), store.pin(gone, "export"):
        pass
    with pytest.raises(NotFound, match=gone):
        store.read_frames(gone, 0)
    with pytest.raises(NotFound, match=gone):
        store.verify(gone)
    with pytest.raises(NotFound, match=gone):
        store.pin_until_released(gone, "recovered-vm rv-1")
    assert store.pins() == []  # the refused pins left no rows


def test_pins_are_seen_by_another_store_on_the_same_index(tmp_path: Path, clock: FakeClock) -> None:
    """Two cloud-service processes sharing a store: a pin taken by one stops the other's
    retention, and a delete refuses it."""
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    _disk, points, _images = _history(store, clock)
    other = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    with store.pin(points[0].point_id, "export by process one"):
        assert other.apply_retention("vm", KEEP_LATEST) == [points[1].point_id, points[2].point_id]
        with pytest.raises(StateConflict, match="export by process one"):
            other.delete_point(points[0].point_id)
    assert other.apply_retention("vm", KEEP_LATEST) == [points[0].point_id]
    other.close()


def test_pins_survive_reopening_and_expire_after_their_lease(tmp_path: Path, clock: FakeClock) -> None:
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock, pin_lease_s=600)
    _disk, points, _images = _history(store, clock)
    held = store.pin(points[0].point_id, "export of a process that is killed")
    held.__enter__()  # ... and never left: the process dies holding the pin
    store.close()
    reopened = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock, pin_lease_s=600)
    assert [p.point_id for p in reopened.pins()] == [points[0].point_id]
    assert points[0].point_id not in reopened.apply_retention("vm", KEEP_LATEST)
    clock.advance(601)  # nobody renews it
    assert reopened.pins() == []
    assert reopened.apply_retention("vm", KEEP_LATEST) == [points[0].point_id]
    reopened.gc()
    assert reopened.db.query("SELECT COUNT(*) FROM pins")[0][0] == 0  # the collector forgot it


def test_a_held_pin_is_renewed(tmp_path: Path, clock: FakeClock) -> None:
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock,
                       pin_lease_s=600, pin_renew_s=0.01)
    _disk, points, _images = _history(store, clock)
    with store.pin(points[0].point_id, "a slow export"):
        clock.advance(3600)  # far past the lease it was taken with
        deadline = time.monotonic() + 30
        while not store.pins(points[0].point_id):  # until the renewer has run at the new time
            assert time.monotonic() < deadline, "the held pin was not renewed"
            time.sleep(0.01)
        assert points[0].point_id not in store.apply_retention("vm", KEEP_LATEST)
    store.close()


def test_retention_renews_this_process_pins_first(tmp_path: Path, clock: FakeClock) -> None:
    """A jump of the clock past the lease between two renewals does not expose a point that
    this process is still reading."""
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock,
                       pin_lease_s=600, pin_renew_s=3600)
    _disk, points, _images = _history(store, clock)
    with store.pin(points[0].point_id, "export"):
        clock.advance(7200)
        assert points[0].point_id not in store.apply_retention("vm", KEEP_LATEST)
    store.close()


def test_named_pins_last_until_released(tmp_path: Path, clock: FakeClock) -> None:
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    _disk, points, _images = _history(store, clock)
    target = points[1].point_id
    assert store.pin_until_released(target, "recovered-vm rv-1").point_id == target
    store.pin_until_released(target, "recovered-vm rv-1")  # idempotent
    clock.advance(30 * 86400)
    assert [p.holder for p in store.pins(target)] == ["recovered-vm rv-1"]
    # The explicit set of failover's pins keeps working beside the rows.
    assert store.apply_retention("vm", KEEP_LATEST, pinned={points[0].point_id}) == [points[2].point_id]
    with pytest.raises(StateConflict, match="recovered-vm rv-1"):
        store.delete_point(target)
    assert store.release("recovered-vm rv-1") == 1
    assert store.apply_retention("vm", KEEP_LATEST) == [points[0].point_id, target]
    store.pin_until_released(points[3].point_id, "recovered-vm rv-2")
    store.delete_point(points[3].point_id, force=True)
    assert store.pins() == [] and store.list_points("vm") == []


def test_a_stalled_holder_gets_its_pin_back_before_it_deletes(tmp_path: Path, clock: FakeClock) -> None:
    """This process stalled past its lease and another process's collection forgot the pin;
    the holder still holds it, so this process's retention (and collection) put it back."""
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock,
                       pin_lease_s=600, pin_renew_s=3600)
    _disk, points, _images = _history(store, clock)
    other = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock, pin_lease_s=600)
    with store.pin(points[0].point_id, "a stalled export"):
        clock.advance(7200)
        other.gc()
        assert other.pins() == []
        assert points[0].point_id not in store.apply_retention("vm", KEEP_LATEST)
        assert [p.holder for p in other.pins()] == ["a stalled export"]
    assert other.pins() == []
    other.close()
    store.close()
