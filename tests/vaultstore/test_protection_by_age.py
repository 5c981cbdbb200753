"""Protection by age (collector rule 3): what an upload session adds is kept because its packs
are numbered above the session, not by a row per chunk. These tests pin what that rests on:
the numbering itself, a session that dies (it defers collection until it expires, and no
longer), a session that expires during its commit, and an index rebuilt while a session is
open. They run on every backend (the blob one with its index in PostgreSQL in the second pass)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chunkfmt as cf
from asrclock import FakeClock
from asrerrors import NotFound
from cloudsvc.vaultstore import Backend, DiskDelta, LocalDirBackend
from cloudsvc.vaultstore.indexdb import IndexDb, StoreFigures, figures_at
from tests.vaultstore.diskdata import cid, commit_full, make_block, make_store, random_disk, upload


def test_a_dead_session_defers_collection_of_newer_packs_until_it_expires(
        backend: Backend, tmp_path: Path, clock: FakeClock) -> None:
    """An agent that dies mid-cycle leaves its session open. Packs sealed after it began are
    not examined (the collection says how many), packs sealed before it are; once the
    session has been idle for its lifetime the next collection closes it and reclaims all."""
    rng = random.Random(71)
    store = make_store(backend, tmp_path / "idx.db", clock, session_ttl_s=600)
    before = commit_full(store, "vm0", [random_disk(rng, 6, fill=1.0)], clock.now())
    dead = store.begin_session("vm1")
    upload(store, dead, {0: make_block(rng)})   # and then its agent dies: never committed, never ended
    store.flush()
    after = commit_full(store, "vm2", [random_disk(rng, 6, fill=1.0)], clock.now())
    store.delete_point(before.point_id)
    store.delete_point(after.point_id)

    stats = store.gc()
    assert stats.packs_kept_by_age >= 2 and stats.sessions_expired == 0
    young = {r.name for r in store.db.packs("live")}
    assert young and all(r.seq > store.db.session_seq(dead) for r in store.db.packs("live"))  # type: ignore[operator]

    clock.advance(601)
    stats = store.gc()
    assert stats.sessions_expired == 1 and stats.packs_kept_by_age == 0
    assert store.db.packs() == [] and store.storage_bytes() == 0
    store.close()


def test_open_sessions_are_counted_for_the_metrics(backend: Backend, tmp_path: Path, clock: FakeClock) -> None:
    """What ``asr_storage_upload_sessions`` and its oldest session's time report: the same from
    an open store and read without opening it (a process that has not opened the store)."""
    store = make_store(backend, tmp_path / "idx.db", clock)
    t0 = clock.now()
    first = store.begin_session("vm1")
    clock.advance(10)
    store.begin_session("vm2")
    upload(store, first, {0: make_block(random.Random(74))})
    store.flush()
    both = StoreFigures(store.storage_bytes(), 2, t0)
    assert store.db.figures() == both and figures_at(store.index) == both
    store.end_session(first)
    assert store.db.figures() == figures_at(store.index) == StoreFigures(store.storage_bytes(), 1, t0 + 10)
    store.close()


def test_a_session_that_expires_during_its_commit_records_no_point(tmp_path: Path, clock: FakeClock) -> None:
    """Its packs were no longer kept once the collector expired it, so the point's row is
    written only in a transaction that still finds the session."""
    rng = random.Random(72)
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    session = store.begin_session("vm")
    block = make_block(rng)
    upload(store, session, {0: block})
    real = store.db.point_insert

    def expired_first(point, session_id=None):  # type: ignore[no-untyped-def]
        store.db.session_close(session)   # what a collection does to an idle session
        real(point, session_id)

    store.db.point_insert = expired_first  # type: ignore[method-assign]
    with pytest.raises(NotFound, match="expired before its point was recorded"):
        store.commit_point(session, "vm", [DiskDelta(cf.BLOCK_SIZE, {0: cid(block)})], None, "crash", 1.0)
    assert store.db.points() == []


def test_what_an_open_session_sent_survives_an_index_rebuild_and_a_collection(
        backend: Backend, tmp_path: Path, clock: FakeClock) -> None:
    """A rebuilt index numbers every pack above the sessions open then: their uploads may be
    in any pack, and no row protects them."""
    rng = random.Random(73)
    store = make_store(backend, tmp_path / "idx.db", clock)
    session = store.begin_session("vm")
    blocks = {i: make_block(rng) for i in range(5)}
    ids = upload(store, session, blocks)
    store.flush()
    store.rebuild_index()
    store.gc()
    point = store.commit_point(session, "vm", [DiskDelta(8 * cf.BLOCK_SIZE, ids)], None, "crash", 1.0)
    store.end_session(session)
    assert store.verify(point.point_id) == []
    store.close()


# One step of an index's life: a session opens or closes, a pack is sealed, a pack is forgotten
# (collected). The numbering must hold across any interleaving, forgetting included: a counter
# taken as "the highest pack now" would go down when that pack is collected.
_STEP = st.sampled_from(["open", "close", "seal", "forget"])


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_STEP, max_size=40))
def test_a_pack_sealed_after_a_session_opened_is_numbered_above_it(tmp_path_factory: pytest.TempPathFactory,
                                                                   steps: list[str]) -> None:
    db = IndexDb(str(tmp_path_factory.mktemp("seq") / "idx.db"))
    try:
        sessions: list[str] = []
        opened_before: dict[str, set[str]] = {}   # session -> packs sealed before it opened
        packs: list[str] = []
        for n, step in enumerate(steps):
            if step == "open":
                sid = f"s{n}"
                db.session_open(sid, "vm", 0.0)
                sessions.append(sid)
                opened_before[sid] = set(packs)
            elif step == "close" and sessions:
                db.session_close(sessions.pop(0))
            elif step == "seal":
                db.pack_begin(f"p{n}", 1, 0.0)
                packs.append(f"p{n}")
            elif step == "forget" and packs:
                db.pack_forget(packs.pop())   # the newest: the case a max-based number gets wrong
            rows = {r.name: r.seq for r in db.packs()}
            for sid in sessions:
                seq = db.session_seq(sid)
                assert seq is not None
                for name, pack_seq in rows.items():
                    assert (pack_seq > seq) == (name not in opened_before[sid]), (name, sid)
            oldest = db.oldest_session_seq()
            assert oldest == (min(db.session_seq(s) or 0 for s in sessions) if sessions else None)
    finally:
        db.close()
