"""A full disk anywhere in the store's path is DiskFull (ASR-0061): a pack put failing with
ENOSPC on the background sealing thread (reported at the next call, the first time already),
and the index DB unable to grow. After space returns, the upload is retried and commits."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

import chunkfmt as cf
from asrclock import FakeClock
from asrerrors import AsrError, DiskFull
from cloudsvc.vaultstore import DiskDelta, FaultyBackend, LocalDirBackend, VaultStore
from tests.vaultstore.diskdata import cid, export, make_block, make_store, random_disk


def _no_space() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def _upload_until_error(store: VaultStore, session: str, blocks: dict[int, bytes]) -> AsrError | BaseException:
    """Send blocks in small batches as the agent does; return the first error raised."""
    frames = [(cid(b), cf.encode_chunk(b, None)) for b in blocks.values()]
    try:
        for i in range(0, len(frames), 2):
            store.put_chunks(session, frames[i:i + 2])
        store.flush()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return exc
    raise AssertionError("no error surfaced")


@pytest.mark.parametrize("raised", ["oserror", "storage"])
def test_the_first_full_disk_failure_of_an_upload_is_disk_full(tmp_path: Path, clock: FakeClock, raised: str) -> None:
    rng = random.Random(51)
    faulty = FaultyBackend(LocalDirBackend(tmp_path / "a"))
    store = make_store(faulty, tmp_path / "idx.db", clock)
    disk = random_disk(rng, 20, fill=1.0)  # several packs' worth
    # The backend's put fails as a backend that leaks the OSError would, or as ours does.
    exc = _no_space() if raised == "oserror" else DiskFull("no space left on the storage account's file system")
    full = faulty.add_fault("put").error_instead(exc).repeat(1000)
    session = store.begin_session("vm")
    store.missing([cid(b) for b in disk.blocks.values()], session_id=session)
    first = _upload_until_error(store, session, disk.blocks)
    assert isinstance(first, DiskFull) and first.code == "ASR-0061", repr(first)
    assert full.count >= 1
    # Space returns: what failed is missing again, the retry succeeds and commits.
    faulty.clear()
    lacking = set(store.missing([cid(b) for b in disk.blocks.values()], session_id=session))
    assert lacking
    store.put_chunks(session, [(cid(b), cf.encode_chunk(b, None)) for b in disk.blocks.values() if cid(b) in lacking])
    point = store.commit_point(session, "vm", [DiskDelta(disk.size, {i: cid(b) for i, b in disk.blocks.items()})],
                               None, "crash", clock.now())
    assert store.verify(point.point_id) == []
    assert export(store, point.point_id, 0, disk.size) == disk.image()


def test_an_index_that_cannot_grow_is_disk_full(tmp_path: Path, clock: FakeClock) -> None:
    """SQLite's own "database or disk is full" (here: the page limit of this thread's
    connection reached) surfaces as DiskFull from the index, then works again. What writes
    on the asking thread is the protection of ids ``missing`` finds stored already."""
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    rng = random.Random(52)
    small = [make_block(rng, 64) for _ in range(5000)]
    ids = [cid(b) for b in small]
    first = store.begin_session("vm0")
    store.put_chunks(first, [(cid(b), cf.encode_chunk(b, None)) for b in small])
    store.commit_point(first, "vm0", [DiskDelta(len(small) * cf.BLOCK_SIZE, dict(enumerate(ids)))], None,
                       "crash", 1.0)
    store.end_session(first)
    session = store.begin_session("vm")
    conn = store.db.database.connection()  # this thread's: the one missing() writes with
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(DiskFull) as caught:
        store.missing(ids, session_id=session)
    assert caught.value.code == "ASR-0061" and "idx.db" in str(caught.value)
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert store.missing(ids, session_id=session) == []
    block = make_block(rng)
    store.put_chunks(session, [(cid(block), cf.encode_chunk(block, None))])
    point = store.commit_point(session, "vm", [DiskDelta(cf.BLOCK_SIZE, {0: cid(block)})], None, "crash", 2.0)
    assert store.verify(point.point_id) == []


def test_a_real_enospc_on_the_local_directory_then_a_bigger_pack(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local backend's own write fails with ENOSPC on the sealing thread. The error (kept
    by the caller, with its traceback) must not stop the next, larger pack from sealing."""
    import os

    rng = random.Random(53)
    store = make_store(LocalDirBackend(tmp_path / "a", direct_io=False), tmp_path / "idx.db", clock)
    disk = random_disk(rng, 12, fill=1.0)
    session = store.begin_session("vm")
    real_write = os.write

    def no_space(fd: int, data: object) -> int:
        raise _no_space()

    monkeypatch.setattr(os, "write", no_space)
    first = _upload_until_error(store, session, disk.blocks)
    monkeypatch.setattr(os, "write", real_write)
    assert isinstance(first, DiskFull), repr(first)
    # Incompressible blocks: packs larger than any sealed so far.
    big = {i: rng.randbytes(cf.BLOCK_SIZE) for i in range(12)}
    lacking = set(store.missing([cid(b) for b in big.values()], session_id=session))
    store.put_chunks(session, [(cid(b), cf.encode_chunk(b, None)) for b in big.values() if cid(b) in lacking])
    point = store.commit_point(session, "vm", [DiskDelta(12 * cf.BLOCK_SIZE, {i: cid(b) for i, b in big.items()})],
                               None, "crash", clock.now())
    assert export(store, point.point_id, 0, 12 * cf.BLOCK_SIZE) == b"".join(big[i] for i in range(12))
    assert first.code == "ASR-0061"  # still held: its traceback kept its views alive throughout
