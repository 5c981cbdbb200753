"""A store's index as a schema of PostgreSQL (issue 15: a blob account's chunk index follows the
metadata): an index written in SQLite before the move is adopted with its points, pins and
chunks; the collector's lock excludes a second process and goes with a connection that dies.
(The store's behaviour on PostgreSQL is the rest of tests/vaultstore with ASR_TEST_DATABASE=postgresql:
there every blob-backed store's index is a schema.)"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from asrclock import FakeClock
from cloudsvc.replication import Replication
from cloudsvc.vaultstore import LocalDirBackend, VaultStore
from cloudsvc.vaultstore.indexdb import IndexDb, PgIndex, StoreFigures, figures_at, pg_schema
from metastore.postgres import PgDatabase
from tests import pgserver
from tests.harness import wait_for
from tests.vaultstore.diskdata import commit_changes, commit_full, export, make_block, make_store, random_disk


@pytest.fixture
def pg_url() -> str:
    pgserver.require()
    return pgserver.server().new_database()


def test_an_sqlite_index_is_adopted_into_postgresql_once(tmp_path: Path, clock: FakeClock, pg_url: str) -> None:
    rng = random.Random(7)
    backend = LocalDirBackend(tmp_path / "account")
    path = tmp_path / "store1.index.db"
    old = make_store(backend, path, clock)
    disk = random_disk(rng, 30)
    p1 = commit_full(old, "vm1", [disk], clock.now())
    change = {2: make_block(rng)}
    p2 = commit_changes(old, "vm1", [disk.size], [change], p1.point_id, clock.now() + 300)
    old.pin_until_released(p1.point_id, "recovered:rv-1")
    before = (old.db.points(), old.db.packs(), old.db.pins(clock.now()))
    assert before[2]
    old.close()

    st = VaultStore(backend, PgIndex(pg_url, "ix_adopted"), clock, pack_size=150_000, fanout=4)
    try:
        Replication._adopt_sqlite_index(st, str(path))
        assert (st.db.points(), st.db.packs(), st.db.pins(clock.now())) == before
        # the metrics' read (no open store) sees the schema, and no schema is "no index", not 0
        assert (figures_at(st.index) or StoreFigures(0, 0, None)).pack_bytes == st.storage_bytes() > 0
        assert figures_at(PgIndex(pg_url, "ix_never_made")) is None
        assert not path.exists() and (tmp_path / "store1.index.db.moved-to-postgresql").exists()
        assert export(st, p1.point_id, 0, disk.size) == disk.image()
        disk.blocks.update(change)
        assert export(st, p2.point_id, 0, disk.size) == disk.image()
        assert st.verify(p2.point_id, id_key=None) == []
        # a collection keeps both points (and the pinned one) and the exports still hold
        st.gc()
        assert export(st, p2.point_id, 0, disk.size) == disk.image()
        assert [p.holder for p in st.db.pins(clock.now())] == ["recovered:rv-1"]
        # once adopted, an index that holds rows is never overwritten by a file found later
        (tmp_path / "store1.index.db.moved-to-postgresql").rename(path)
        assert st.db.adopt(str(path)) == 0
        assert st.db.points() == before[0]
    finally:
        st.close()


def test_the_collector_lock_excludes_a_second_process_and_dies_with_its_connection(pg_url: str) -> None:
    where = PgIndex(pg_url, pg_schema("0123456789abcdef", "Store-1"))
    a, b = IndexDb(where), IndexDb(where)
    acquired = threading.Event()
    release = threading.Event()

    def second() -> None:
        with b.collector_lock():
            acquired.set()
            release.wait(30)

    try:
        with a.collector_lock():
            t = threading.Thread(target=second, daemon=True)
            t.start()
            # B is queued on the lock (PostgreSQL shows the wait), not holding it
            wait_for(lambda: a.query("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                     [0][0] == 1, 30, what="the second collector waiting for the lock")
            assert not acquired.is_set()
        wait_for(acquired.is_set, 30, what="the second collector getting the lock once the first let go")
        release.set()
        t.join(30)
        # a holder whose connection dies (a killed process) leaves the lock free
        held = a.collector_lock()
        held.__enter__()
        assert isinstance(a.database, PgDatabase)
        a.database._local.conn.raw.close()   # the dead process's socket; its lock goes with it
        c = IndexDb(where)
        third = threading.Event()

        def after_death() -> None:
            with c.collector_lock():
                third.set()

        threading.Thread(target=after_death, daemon=True).start()
        wait_for(third.is_set, 30, what="the lock of a dead connection to be free")
        c.close()
    finally:
        release.set()
        b.close()


def test_the_indexes_of_several_accounts_share_one_set_of_connections(tmp_path: Path, clock: FakeClock,
                                                                       pg_url: str) -> None:
    """The cloud service opens every blob account's index on one shared database (``PgSchema``):
    each account keeps its own tables, and a thread holds one connection for all of them."""
    shared = PgDatabase(pg_url, [], migrate=False, lock="asr.index")
    rng = random.Random(3)
    stores = [VaultStore(LocalDirBackend(tmp_path / name), PgIndex(pg_url, f"ix_{name}", shared), clock,
                         pack_size=150_000, fanout=4) for name in ("one", "two")]
    try:
        disks = [random_disk(rng, 12), random_disk(rng, 7)]
        points = [commit_full(st, f"vm-{i}", [d], clock.now())
                  for i, (st, d) in enumerate(zip(stores, disks, strict=True))]
        for st, d, p in zip(stores, disks, points, strict=True):   # alternately, on this thread's one connection
            assert [x.point_id for x in st.list_points()] == [p.point_id]
            assert export(st, p.point_id, 0, d.size) == d.image()
        others = shared.query("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
                              " AND pid != pg_backend_pid()")[0][0]
        # this thread's connection plus each store's sealer thread's; not a set per account
        assert others <= len(stores)
        # one index's transaction never runs the other's statements on its connection
        with pytest.raises(RuntimeError, match="inside a transaction"), stores[0].db.tx():
            stores[1].db.points()
        assert [x.point_id for x in stores[1].list_points()] == [points[1].point_id]
    finally:
        for st in stores:
            st.close()
        shared.close()
