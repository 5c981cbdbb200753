"""Garbage collection does not stop uploads: with a collection paused inside the backend (while
it marks, and while it sweeps), an agent's whole cycle (missing, put_chunks, commit) completes;
the chunks that cycle reuses from a point deleted before the collection survive it, and every
point exports exactly afterwards."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from asrclock import FakeClock
from cloudsvc.vaultstore import Backend, DiskDelta, FaultyBackend, GcStats, PointInfo, VaultStore
from tests.vaultstore.diskdata import cid, commit_changes, commit_full, make_block, make_store, point_image, random_disk

DEADLINE_S = 60.0
REUSED = (0, 2, 4)  # garbage blocks the cycle during the collection uses again


def _in_thread(work: object) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(work())  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


# How the cycle comes to use the garbage chunks again: told they are present by ``missing``;
# sending them without asking (``put_chunks`` finds them stored); or naming them in its
# point without asking or sending (the commit finds them in packs older than the session).
# Each path must protect them by id (collector rule 3).
@pytest.mark.parametrize("reuse", ["missing", "put", "commit"])
@pytest.mark.parametrize("phase", ["get", "delete"])  # paused while marking / while sweeping
def test_uploads_and_commits_complete_while_gc_is_paused(backend: Backend, tmp_path: Path, clock: FakeClock,
                                                         phase: str, reuse: str) -> None:
    rng = random.Random(41)
    faulty = FaultyBackend(backend)
    store = make_store(faulty, tmp_path / "idx.db", clock)
    disk = random_disk(rng, 24, fill=1.0)
    old = commit_full(store, "vm", [disk], clock.now())
    clock.advance(300)
    changes = {b: make_block(rng) for b in range(0, 24, 2)}
    kept = commit_changes(store, "vm", [disk.size], [changes], old.point_id, clock.now())
    images = {kept.point_id: point_image(store, kept)}
    store.delete_point(old.point_id)  # its even blocks, rewritten since, are now garbage
    garbage = {b: disk.blocks[b] for b in changes}

    gate = faulty.add_fault(phase).pause(timeout_s=DEADLINE_S)
    collector, collected = _in_thread(store.gc)
    try:
        assert gate.wait_fired(DEADLINE_S), "the collection never reached the backend"

        uploader, uploaded = _in_thread(lambda: _cycle(store, garbage, rng, clock.now() + 1, reuse))
        uploader.join(DEADLINE_S)
        assert not uploader.is_alive(), "an upload waited for the paused collection"
        assert collector.is_alive() and not collected  # the collection is still paused
    finally:
        gate.release()
        collector.join(DEADLINE_S)
    assert not collector.is_alive() and isinstance(collected[0], GcStats), collected
    point = uploaded[0]
    assert isinstance(point, PointInfo), point
    images[point.point_id] = point_image(store, point)
    # What the collection was paused over is consistent, and a second one changes nothing.
    for _ in range(2):
        for pid, image in images.items():
            assert store.verify(pid) == []
            assert point_image(store, store.get_point(pid)) == image
        store.gc()
    # The garbage that nothing reused is gone.
    unused = {cid(b) for k, b in garbage.items() if k not in REUSED}
    assert store.db.present(unused) == set()


@pytest.mark.parametrize("reuse", ["missing", "put", "commit"])
def test_a_whole_collection_between_a_cycles_steps_keeps_what_it_reuses(backend: Backend, tmp_path: Path,
                                                                        clock: FakeClock, reuse: str) -> None:
    """The protection by id, each path on its own: a complete collection runs after the
    cycle's last step that protects the reused chunks and before its point's row exists
    (after ``put_chunks``; for a commit, inside it, just before the row). Without the
    protection the collection removes them: the commit refuses, or records a point whose
    chunks are gone."""
    rng = random.Random(42)
    store = make_store(backend, tmp_path / "idx.db", clock)
    disk = random_disk(rng, 8, fill=1.0)
    old = commit_full(store, "vm", [disk], clock.now())
    store.delete_point(old.point_id)   # all of its chunks are garbage now
    garbage = dict(disk.blocks)
    collections: list[GcStats] = []
    if reuse == "commit":
        real = store.db.point_insert

        def collect_first(p: PointInfo, session_id: str | None = None) -> None:
            collections.append(store.gc())
            real(p, session_id)

        store.db.point_insert = collect_first  # type: ignore[method-assign]
        point = _cycle(store, garbage, rng, clock.now() + 1, reuse)
    else:
        point = _cycle(store, garbage, rng, clock.now() + 1, reuse, between=lambda: collections.append(store.gc()))
    assert len(collections) == 1 and collections[0].packs_deleted >= 1   # it did collect the rest
    assert store.verify(point.point_id) == []
    image = point_image(store, point)[0]
    assert all(image[b * 65536:(b + 1) * 65536] == garbage[b] for b in REUSED)
    assert store.db.present({cid(garbage[b]) for b in REUSED}) == {cid(garbage[b]) for b in REUSED}
    store.close()


def _cycle(store: VaultStore, garbage: dict[int, bytes], rng: random.Random, at: float, reuse: str,
           between: Callable[[], None] = lambda: None) -> PointInfo:
    """Another VM's whole cycle: it reuses three chunks of the deleted point and uploads one
    new chunk."""
    import chunkfmt as cf

    reused = {b: garbage[b] for b in REUSED}
    new = {1: make_block(rng)}
    blocks = {**reused, **new}
    session = store.begin_session("vm2")
    if reuse == "missing":
        lacking = set(store.missing([cid(b) for b in blocks.values()], session_id=session))
        assert lacking == {cid(b) for b in new.values()}
        sent = [b for b in blocks.values() if cid(b) in lacking]
    else:
        sent = list(blocks.values()) if reuse == "put" else list(new.values())
    store.put_chunks(session, [(cid(b), cf.encode_chunk(b, None)) for b in sent])
    between()
    size = 8 * cf.BLOCK_SIZE
    point = store.commit_point(session, "vm2", [DiskDelta(size, {k: cid(b) for k, b in blocks.items()})],
                               None, "crash", at)
    store.end_session(session)
    return point
