"""Retention-driven deletion and garbage collection on an injected clock."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

import chunkfmt as cf
from asrclock import FakeClock
from cloudsvc.vaultstore import Backend, LocalDirBackend, RetentionPolicy, VaultStore, merkle
from cloudsvc.vaultstore.packfile import pack_overhead
from tests.vaultstore.diskdata import (
    cid,
    commit_changes,
    commit_full,
    export,
    make_block,
    make_store,
    random_disk,
    upload,
)


def _live_blob_bytes(store: VaultStore) -> int:
    return int(store.db.query("SELECT COALESCE(SUM(length), 0) FROM chunks")[0][0])


def test_gc_returns_storage_to_what_live_points_need(
    backend: Backend, tmp_path: Path, clock: FakeClock
) -> None:
    rng = random.Random(8)
    store = make_store(backend, tmp_path / "idx.db", clock)
    disk = random_disk(rng, 24, fill=0.8)
    images = {}
    prev = commit_full(store, "vm", [disk], clock.now())
    images[prev.point_id] = disk.image()
    for _ in range(30):  # 30 points, 5 minutes apart, a few changed blocks each
        clock.advance(300)
        changes = {rng.randrange(disk.count): make_block(rng) for _ in range(3)}
        disk.blocks.update(changes)
        prev = commit_changes(store, "vm", [disk.size], [changes], prev.point_id, clock.now())
        images[prev.point_id] = disk.image()
    grown = store.storage_bytes()
    deleted = store.apply_retention(
        "vm", RetentionPolicy(copy_frequency_s=300, retention_hours=1, app_consistent_hours=0)
    )
    assert deleted and prev.point_id not in deleted
    stats = store.gc()
    assert stats.packs_deleted > 0 and stats.bytes_after == store.storage_bytes() < grown
    kept = store.list_points("vm")
    for p in kept:
        assert store.verify(p.point_id) == []
        assert export(store, p.point_id, 0, disk.size) == images[p.point_id]
    # Expected size: a fresh store holding only the kept points has the same live blobs, and
    # the collected store has no dead bytes beyond per-pack overhead.
    fresh = make_store(LocalDirBackend(tmp_path / "fresh"), tmp_path / "fresh.db", clock)
    for p in kept:
        blocks = {b: c for b, c in store.block_map(p.point_id, 0) if c != cf.ZERO_ID}
        data = dict(enumerate(images[p.point_id][i:i + cf.BLOCK_SIZE]
                              for i in range(0, disk.size, cf.BLOCK_SIZE)))
        session = fresh.begin_session("vm")
        upload(fresh, session, {b: data[b] for b in blocks})
        fresh.commit_point(session, "vm", [_delta(disk.size, blocks)], None, p.kind, p.created_at)
    assert _live_blob_bytes(store) == _live_blob_bytes(fresh)
    overhead = sum(
        pack_overhead(store.db.query("SELECT COUNT(*) FROM chunks WHERE pack=?", (r.name,))[0][0])
        for r in store.db.packs()
    )
    assert store.storage_bytes() == _live_blob_bytes(store) + overhead
    # Deleting every point but the latest and collecting again shrinks further; nothing breaks.
    for p in kept[:-1]:
        store.delete_point(p.point_id)
    store.gc()
    assert store.verify(prev.point_id) == []


def _delta(size: int, blocks: dict[int, bytes]):  # type: ignore[no-untyped-def]
    from cloudsvc.vaultstore import DiskDelta

    return DiskDelta(size, blocks)


def test_gc_keeps_open_session_chunks_and_protected_ids(tmp_path: Path, clock: FakeClock) -> None:
    rng = random.Random(9)
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    disk = random_disk(rng, 10, fill=1.0)
    old = commit_full(store, "vm", [disk], clock.now())
    # An agent's cycle in progress: one new chunk uploaded, and one old chunk it was told is
    # present (protected through missing(..., session_id)).
    session = store.begin_session("vm")
    new = make_block(rng)
    upload(store, session, {0: new})
    reused = disk.blocks[5]
    assert store.missing([cid(reused)], session_id=session) == []
    store.delete_point(old.point_id)  # the old point expires meanwhile
    store.gc()
    from cloudsvc.vaultstore import DiskDelta

    point = store.commit_point(
        session, "vm", [DiskDelta(disk.size, {0: cid(new), 5: cid(reused)})], None, "crash", 9.0
    )
    store.end_session(session)
    assert store.verify(point.point_id) == []
    store.gc()
    assert store.verify(point.point_id) == []
    assert store.db.query("SELECT COUNT(*) FROM chunks WHERE kind = 0")[0][0] == 2


def test_idle_sessions_expire(tmp_path: Path, clock: FakeClock) -> None:
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock,
                       session_ttl_s=3600)
    session = store.begin_session("vm")
    upload(store, session, {0: make_block(random.Random(1))})
    store.flush()
    clock.advance(7200)
    stats = store.gc()
    assert stats.sessions_expired == 1 and store.storage_bytes() == 0


def test_deleting_an_orphan_point_reclaims_exactly_its_own_data(tmp_path: Path, clock: FakeClock) -> None:
    """A point row whose commit the cloud refused (a fenced primary) is found by listing every
    point, deleted, and the collection then removes exactly the blobs only it used."""
    rng = random.Random(71)
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    disk = random_disk(rng, 30, fill=0.8)
    good = commit_full(store, "vm", [disk], clock.now())
    image = export(store, good.point_id, 0, disk.size)
    fenced = {b: make_block(rng) for b in (0, 7, 21)}  # the stale primary's own writes
    orphan = commit_changes(store, "vm", [disk.size], [fenced], good.point_id, clock.now() + 300)
    store.gc()
    before = {r[0] for r in store.db.query("SELECT id FROM chunks")}
    known = {good.point_id}  # what the cloud's metadata DB says is committed
    strays = [p.point_id for p in store.list_points() if p.point_id not in known]
    assert strays == [orphan.point_id]
    # Blobs only the orphan reaches: its new chunks and the tree nodes on their paths.
    def reach(pid: str) -> set[bytes]:
        point = store.get_point(pid)
        ids = {nid for d in point.disks for _l, _s, nid, _n in merkle.iter_nodes(
            store._read_node, d.root, merkle.block_count(d.virtual_size), d.fanout)}
        return ids | {c for _b, c in store.block_map(pid, 0) if c != cf.ZERO_ID}

    own = reach(orphan.point_id) - reach(good.point_id)
    assert {cid(b) for b in fenced.values()} <= own
    store.delete_point(orphan.point_id)
    stats = store.gc()
    after = {r[0] for r in store.db.query("SELECT id FROM chunks")}
    assert before - after == own and after == reach(good.point_id)
    assert stats.live_points == 1
    assert export(store, good.point_id, 0, disk.size) == image and store.verify(good.point_id) == []


def test_a_first_copy_protects_nothing_by_id_and_its_chunks_survive_gc(tmp_path: Path, clock: FakeClock) -> None:
    """New chunks are kept by age (collector rule 3): neither ``missing`` nor ``put_chunks``
    writes a protection row for them (until 2026-12-03 each did, one row per chunk: a fifth of
    the cloud service's CPU on a first copy), and a collection between the upload and the
    commit, with the upload's pack sealed before it, still keeps them."""
    rng = random.Random(11)
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    session = store.begin_session("vm")
    blocks = {i: make_block(rng) for i in range(4)}
    protected: list[list[bytes]] = []
    real = store.db.session_protect

    def recording(session_id: str, ids: Iterable[bytes], now: float) -> None:
        protected.append(list(ids))
        real(session_id, ids, now)

    store.db.session_protect = recording  # type: ignore[method-assign]
    assert store.missing([cid(b) for b in blocks.values()], session_id=session) == [cid(b) for b in blocks.values()]
    stray = make_block(rng)  # never asked about
    store.put_chunks(session, [(cid(b), cf.encode_chunk(b, None)) for b in (*blocks.values(), stray)])
    store.flush()
    stats = store.gc()
    assert stats.packs_kept_by_age >= 1 and stats.packs_deleted == 0
    from cloudsvc.vaultstore import DiskDelta

    changes = {i: cid(b) for i, b in blocks.items()} | {4: cid(stray)}
    point = store.commit_point(session, "vm", [DiskDelta(8 * cf.BLOCK_SIZE, changes)], None, "crash", 9.0)
    store.end_session(session)
    assert protected == [] and store.db.query("SELECT COUNT(*) FROM session_chunks")[0][0] == 0
    assert store.verify(point.point_id) == []


class _Stop(Exception):
    pass


def test_gc_checkpoints_between_its_steps_and_may_stop_there(tmp_path: Path, clock: FakeClock) -> None:
    """``gc(checkpoint)`` calls it before marking each point and before each pack it drops or
    copies (the cloud's maintenance renews its lease there, so a long collection keeps it); a
    checkpoint that raises stops the collection there with nothing lost, and the next
    collection finishes the work."""
    rng = random.Random(12)
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    points = [commit_full(store, f"vm{i}", [random_disk(rng, 24, fill=1.0)], clock.now()) for i in range(4)]
    keep = points[-1]
    for p in points[:-1]:
        store.delete_point(p.point_id)
    grown = store.storage_bytes()

    calls = 0

    def stop_after(n: int) -> Callable[[], None]:
        def checkpoint() -> None:
            nonlocal calls
            calls += 1
            if calls > n:
                raise _Stop
        return checkpoint

    # stopped at the third checkpoint: the one point marked, one pack dropped, then no further
    with pytest.raises(_Stop):
        store.gc(stop_after(2))
    assert calls == 3 and grown > store.storage_bytes() and store.verify(keep.point_id) == []

    calls = 0
    stats = store.gc(stop_after(1_000))
    assert stats.packs_deleted > 0 and calls >= stats.live_points + stats.packs_deleted == 1 + stats.packs_deleted
    assert store.verify(keep.point_id) == []
    again = store.gc()
    assert again.packs_deleted == 0 and again.bytes_after == stats.bytes_after
