"""Group frames (several chunks compressed in one frame) in the vault store: stored once with a
trailer entry and an index row per member, read back with one decode per frame, deduplicated
against chunks stored already, kept whole by garbage collection while any member lives,
verified, rebuilt from the trailers, and exported through ``ExportPoint`` and ``asr point
export``."""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

import chunkfmt as cf
import chunkfmt.frame
from asrclock import FakeClock
from asrerrors import DataCorrupt
from asrpb import replication_pb2
from cloudsvc.vaultstore import Backend, DiskDelta, LocalDirBackend, PointInfo, VaultStore, wire
from cloudsvc.vaultstore.integrity import read_pack_trailer
from cloudsvc.vaultstore.packfile import KIND_CHUNK, PACK_PREFIX, PackBuilder, blob_hash, pack_overhead, parse_tail
from tests.vaultstore.diskdata import ID_KEY, cid, export, flip_byte, make_block, make_store

KEY = cf.CustomerKey.generate()
SIZE = 24 * cf.BLOCK_SIZE  # blocks 20..23 stay zero


def _send(store: VaultStore, session: str, singles: Sequence[tuple[bytes, bytes]],
          groups: Sequence[bytes]) -> replication_pb2.PutChunksReply:
    """One ``PutChunks`` stream of one batch, as a server receives it."""
    batch = replication_pb2.ChunkBatch(session_id=session, ids=[c for c, _ in singles],
                                       frames=[f for _, f in singles], groups=list(groups))
    return wire.put_chunks([batch], lambda sid: (store, sid))


def _group(blocks: dict[int, bytes], members: Sequence[int], aead: bytes | None) -> bytes:
    return cf.encode_group([(cid(blocks[i]), blocks[i]) for i in members], aead)


def _rows(store: VaultStore) -> list[tuple[object, ...]]:
    return sorted(tuple(r) for r in store.db.query('SELECT id, kind, pack, "offset", length, hash FROM chunks'))


def _locs(store: VaultStore, ids: Sequence[bytes]) -> list[tuple[str, int, int, bytes]]:
    found = store.db.lookup(ids)
    return [(found[i].pack, found[i].offset, found[i].length, found[i].hash) for i in ids]


def _in_any_pack(backend: Backend, frame: bytes) -> bool:
    return any(frame in backend.get(name) for name in backend.list(PACK_PREFIX))


def _commit(store: VaultStore, blocks: dict[int, bytes], groups: Sequence[Sequence[int]], base: str | None,
            at: float, aead: bytes | None = None, size: int = SIZE) -> PointInfo:
    """Upload ``blocks`` (the changed ones) as the agent of a ``strong`` policy does: what the
    store lacks, the blocks of ``groups`` as group frames, the others as single frames."""
    session = store.begin_session("vm")
    ids = {i: cid(b) for i, b in blocks.items()}
    lacking = set(store.missing(ids.values(), session_id=session))
    grouped = {i for g in groups for i in g}
    singles = [(ids[i], cf.encode_chunk(b, aead)) for i, b in blocks.items() if i not in grouped and ids[i] in lacking]
    frames = [_group(blocks, g, aead) for g in groups if any(ids[i] in lacking for i in g)]
    store.put_chunks(session, singles, frames)
    point = store.commit_point(session, "vm", [DiskDelta(size, ids)], base, "crash", at)
    store.end_session(session)
    return point


def _image(blocks: dict[int, bytes], size: int = SIZE) -> bytes:
    out = bytearray(size)
    for i, data in blocks.items():
        out[i * cf.BLOCK_SIZE:i * cf.BLOCK_SIZE + len(data)] = data
    return bytes(out)


def test_pack_builder_shares_one_blob_between_entries() -> None:
    builder = PackBuilder()
    a, b, c, d = (bytes([n]) * 32 for n in range(1, 5))
    builder.add(KIND_CHUNK, a, b"single frame")
    assert builder.add_shared(KIND_CHUNK, [b, c, a], b"a group frame") == [b, c]  # a is in the pack already
    assert builder.add_shared(KIND_CHUNK, [b, c], b"the same group again") == []  # nothing new: not added
    builder.add(KIND_CHUNK, d, b"last", blob_hash(b"last"))
    assert b in builder and c in builder and len(builder) == 4
    data = builder.seal()
    entries, _ = parse_tail(data, len(data))
    assert [e.id for e in entries] == [a, b, c, d]
    for e in entries:  # every entry's hash is the hash of the bytes it points at
        assert e.hash == blob_hash(data[e.offset:e.offset + e.length])
    assert (entries[1].offset, entries[1].length) == (entries[2].offset, entries[2].length)
    assert data[entries[1].offset:entries[1].offset + entries[1].length] == b"a group frame"
    assert data[entries[3].offset:entries[3].offset + entries[3].length] == b"last"
    assert b"the same group again" not in data


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_group_frames_are_stored_once_and_read_back(
    backend: Backend, tmp_path: Path, clock: FakeClock, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(41)
    aead = KEY.aead_key if encrypted else None
    store = make_store(backend, tmp_path / "idx.db", clock)
    blocks = {i: make_block(rng) for i in range(20)}
    ids = {i: cid(b) for i, b in blocks.items()}
    # an earlier cycle stored blocks 0 and 5 as single frames
    early = store.begin_session("vm")
    _send(store, early, [(ids[i], cf.encode_chunk(blocks[i], aead)) for i in (0, 5)], [])
    store.end_session(early)
    before = _locs(store, [ids[0], ids[5]])

    session = store.begin_session("vm")
    groups = [_group(blocks, g, aead) for g in ([0, 1, 2, 3], [4, 5, 6, 7], list(range(8, 16)))]
    stored_already = _group(blocks, [0, 5], aead)  # every member stored: nothing to store
    singles = [(ids[i], cf.encode_chunk(blocks[i], aead)) for i in range(16, 20)]
    reply = _send(store, session, singles, [*groups, stored_already])
    assert reply.received == 4 + 4 + 4 + 8 + 2
    assert reply.bytes == sum(len(f) for _, f in singles) + sum(len(g) for g in [*groups, stored_already])
    assert not _in_any_pack(backend, stored_already)
    # members stored before keep their rows; the others share their group's location
    assert _locs(store, [ids[0], ids[5]]) == before
    for frame, members in zip(groups, ([1, 2, 3], [4, 6, 7], range(8, 16)), strict=True):
        locs = set(_locs(store, [ids[i] for i in members]))
        assert len(locs) == 1
        pack, offset, length, digest = locs.pop()
        assert (length, digest) == (len(frame), blob_hash(frame))
        assert backend.get(pack, offset, length) == frame
        # the trailer names every member of the frame, also one whose row is elsewhere
        hdr = cf.parse_header(frame)
        trailer = {e.id: e for e in read_pack_trailer(backend, pack)}
        assert {trailer[m].offset for m in hdr.ids()} == {offset}
    # every frame stored once: 2 + 4 single frames, 3 group frames
    assert len({(r[2], r[3]) for r in _rows(store)}) == 9

    point = store.commit_point(session, "vm", [DiskDelta(SIZE, ids)], None, "crash", clock.now())
    store.end_session(session)
    opened: list[int] = []
    real_open = chunkfmt.frame._open

    def counting_open(hdr: cf.FrameHeader, frame: bytes, key: bytes | None) -> bytes:
        if hdr.plain_len >= cf.BLOCK_SIZE:  # a chunk's frame, not a tree node's
            opened.append(1)
        return real_open(hdr, frame, key)

    monkeypatch.setattr(chunkfmt.frame, "_open", counting_open)
    read = list(store.read_frames(point.point_id, 0))
    assert [(b, c) for b, c, _ in read] == [(i, ids.get(i, cf.ZERO_ID)) for i in range(24)]
    assert all(f is None for _, _, f in read[20:])
    assert read[1][2] is read[2][2] is read[3][2]  # a group's consecutive members: one object
    assert len({id(f) for _, _, f in read[8:16]}) == 1
    image = bytearray(SIZE)
    for block, chunk, got in read:
        if got is not None:
            image[block * cf.BLOCK_SIZE:(block + 1) * cf.BLOCK_SIZE] = cf.decode_chunk(got, aead, chunk=chunk)
    assert bytes(image) == _image(blocks)
    assert len(opened) == 9  # one decode per frame, not per block
    fetched = store.fetch_blobs({ids[8], ids[9], ids[15]})
    assert fetched[ids[8]] is fetched[ids[9]] is fetched[ids[15]]
    monkeypatch.undo()
    assert store.verify(point.point_id, None if encrypted else ID_KEY) == []


def test_junk_group_frames_are_refused(tmp_path: Path, clock: FakeClock) -> None:
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    session = store.begin_session("vm")
    block = make_block(random.Random(1))
    good = cf.encode_group([(cid(block), block), (bytes(31) + b"\1", block)], None)
    for junk in (b"junk", good[:-1], cf.encode_chunk(block, None)):  # a single frame names no id
        with pytest.raises(DataCorrupt):
            _send(store, session, [], [junk])
    zero_member = cf.encode_group([(cf.ZERO_ID, bytes(8)), (cid(block), block)], None)
    with pytest.raises(DataCorrupt, match="zero"):
        store.put_chunks(session, [], [zero_member])
    assert store.storage_bytes() == 0


def test_gc_regroups_a_partly_dead_group_and_reclaims_a_dead_one(
    backend: Backend, tmp_path: Path, clock: FakeClock
) -> None:
    rng = random.Random(42)
    store = make_store(backend, tmp_path / "idx.db", clock)
    blocks = {i: make_block(rng) for i in range(12)}
    old = dict(blocks)
    p1 = _commit(store, blocks, [[0, 1, 2, 3], [4, 5, 6, 7]], None, clock.now())
    g1_frame, g2_frame = _group(old, [0, 1, 2, 3], None), _group(old, [4, 5, 6, 7], None)  # zstd is deterministic
    assert _in_any_pack(backend, g1_frame) and _in_any_pack(backend, g2_frame)
    (g1_loc,) = set(_locs(store, [cid(old[i]) for i in (0, 1, 2, 3)]))
    clock.advance(300)
    changes = {i: make_block(rng) for i in (1, 4, 5, 6, 7)}  # group 1 partly dead, group 2 wholly
    blocks.update(changes)
    p2 = _commit(store, changes, [], p1.point_id, clock.now())
    assert export(store, p1.point_id, 0, SIZE) == _image(old)

    # While p1 lives nothing is collected.
    store.gc()
    assert store.db.present([cid(old[i]) for i in range(8)]) == {cid(old[i]) for i in range(8)}
    store.delete_point(p1.point_id)
    stats = store.gc()
    assert stats.packs_deleted > 0
    live = [cid(old[i]) for i in (0, 2, 3)]
    dead = [cid(old[i]) for i in (1, 4, 5, 6, 7)]
    assert store.db.present(dead) == set()  # dead members' rows are gone
    locs = set(_locs(store, live))
    assert len(locs) == 1  # the live members still share one location: a new frame of them only,
    (loc,) = locs
    assert loc[0] != g1_loc[0] and loc[2] < g1_loc[2]  # smaller, in a new pack
    regrouped = backend.get(loc[0], loc[1], loc[2])
    assert cf.parse_header(regrouped).ids() == live and stats.groups_regrouped == 1
    assert not _in_any_pack(backend, g1_frame)  # member 1's old content is no longer stored
    assert not _in_any_pack(backend, g2_frame)  # the all-dead group is reclaimed
    assert export(store, p2.point_id, 0, SIZE) == _image(blocks)
    assert store.verify(p2.point_id, ID_KEY) == []
    # A shared frame's bytes count once: nothing dead is left but per-pack overhead.
    rows = _rows(store)
    frames = {(r[2], r[3]): r[4] for r in rows}
    overhead = sum(pack_overhead(sum(1 for r in rows if r[2] == p.name)) for p in store.db.packs())
    assert store.storage_bytes() == sum(frames.values()) + overhead  # type: ignore[arg-type]
    # Collecting again changes nothing; the group is kept while member 0 lives, then goes.
    assert store.gc().packs_deleted == 0
    clock.advance(300)
    p3 = _commit(store, {i: make_block(rng) for i in (0, 2, 3)}, [], p2.point_id, clock.now())
    store.delete_point(p2.point_id)
    store.gc()
    assert store.db.present(live) == set()
    assert not _in_any_pack(backend, regrouped)
    assert store.verify(p3.point_id, ID_KEY) == []


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_pack_whose_only_waste_is_a_partly_dead_group(tmp_path: Path, clock: FakeClock, encrypted: bool,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Half of a group's members die: their share of the frame is the pack's dead bytes,
    above the repack threshold. Unencrypted, the collector regroups the live half (the
    vault shrinks by about that share); encrypted, it cannot open the frame, so it keeps
    the pack as it is and does not count the frame's dead share, so no collection rewrites
    the pack for nothing."""
    rng = random.Random(45)
    aead = KEY.aead_key if encrypted else None
    backend = LocalDirBackend(tmp_path / "a")
    store = make_store(backend, tmp_path / "idx.db", clock, min_dead_fraction=0.2)
    blocks = {i: make_block(rng) for i in range(8)}
    p1 = _commit(store, blocks, [list(range(8))], None, clock.now(), aead)
    (before,) = set(_locs(store, [cid(blocks[i]) for i in range(8)]))
    changes = {i: make_block(rng) for i in (1, 3, 5, 6)}
    p2 = _commit(store, changes, [], p1.point_id, clock.now() + 300, aead)
    store.delete_point(p1.point_id)
    size = store.storage_bytes()
    stats = store.gc()
    live = [cid(blocks[i]) for i in (0, 2, 4, 7)]
    (after,) = set(_locs(store, live))
    if encrypted:
        assert after == before  # the same frame where it was (only p1's tree nodes went)
        assert stats.packs_written == 0 and stats.groups_regrouped == 0
        assert len(store.sealed_groups) == 1  # its header read once ...
        reads: list[tuple[int, int | None]] = []
        get = store.backend.get

        def recording_get(name: str, offset: int = 0, length: int | None = None) -> bytes:
            reads.append((offset, length))
            return get(name, offset, length)

        monkeypatch.setattr(store.backend, "get", recording_get)
        assert store.gc().packs_written == 0  # and again: nothing to gain, nothing rewritten,
        assert (before[1], cf.HEADER_SIZE) not in reads  # ... and its header not read again
        assert set(_locs(store, live)) == {after}
    else:
        assert stats.groups_regrouped == 1 and after[0] != before[0] and after[2] < before[2] * 0.6
        assert store.storage_bytes() < size - before[2] * 0.4
        assert cf.parse_header(backend.get(after[0], after[1], after[2])).ids() == live
        blocks.update(changes)
        assert export(store, p2.point_id, 0, SIZE) == _image(blocks)
        assert store.verify(p2.point_id, ID_KEY) == []


def test_a_partly_dead_group_is_not_repacked_below_the_threshold(tmp_path: Path, clock: FakeClock) -> None:
    rng = random.Random(43)
    backend = LocalDirBackend(tmp_path / "a")
    store = make_store(backend, tmp_path / "idx.db", clock, min_dead_fraction=0.5)
    blocks = {i: make_block(rng) for i in range(4)}
    p1 = _commit(store, blocks, [[0, 1, 2, 3]], None, clock.now())
    (before,) = set(_locs(store, [cid(blocks[i]) for i in range(4)]))
    changes = {1: make_block(rng)}
    p2 = _commit(store, changes, [], p1.point_id, clock.now() + 300)
    store.delete_point(p1.point_id)
    store.gc()
    # one dead member of four is far below half the pack: the frame stays where it was
    assert set(_locs(store, [cid(blocks[i]) for i in (0, 2, 3)])) == {before}
    blocks.update(changes)
    assert export(store, p2.point_id, 0, SIZE) == _image(blocks)


def test_verify_checks_group_members_and_rebuild_restores_them(
    backend: Backend, tmp_path: Path, clock: FakeClock
) -> None:
    rng = random.Random(44)
    store = make_store(backend, tmp_path / "idx.db", clock)
    blocks = {i: make_block(rng) for i in range(14)}
    point = _commit(store, blocks, [[2, 3, 4, 5], [8, 9, 10]], None, clock.now())
    assert store.verify(point.point_id, ID_KEY) == []

    # rebuild: every member's row comes back from the trailers, at its group's location
    rows = _rows(store)
    packs = sorted((r.name, r.size) for r in store.db.packs())
    with store.db.tx() as conn:
        conn.execute("DELETE FROM chunks")
        conn.execute("DELETE FROM packs")
    result = store.rebuild_index()
    assert (result.packs, result.blobs, result.damaged_packs) == (len(packs), len(rows), [])
    assert _rows(store) == rows
    assert len(set(_locs(store, [cid(blocks[i]) for i in (2, 3, 4, 5)]))) == 1
    assert store.verify(point.point_id, ID_KEY) == []
    assert export(store, point.point_id, 0, SIZE) == _image(blocks)

    # one damaged byte in a group frame: every block it holds is reported
    victim = cid(blocks[9])
    (pack, offset, length, _) = _locs(store, [victim])[0]
    flip_byte(backend, pack, offset + length // 2)
    damage = store.verify(point.point_id, ID_KEY)
    assert sorted(d.block_index for d in damage if "hash" in d.what) == [8, 9, 10]
    with pytest.raises(DataCorrupt, match="block 8"):
        list(store.read_frames(point.point_id, 0))


def test_verify_decodes_each_member_against_its_id(tmp_path: Path, clock: FakeClock) -> None:
    """A group whose table swaps two members' ids (a buggy or hostile agent): the frame is
    intact, but with the id key verify finds that the members do not match their ids."""
    rng = random.Random(45)
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    a, b, c = (make_block(rng) for _ in range(3))
    session = store.begin_session("vm")
    swapped = cf.encode_group([(cid(b), a), (cid(a), b), (cid(c), c)], None)
    store.put_chunks(session, [], [swapped])
    ids = {0: cid(a), 1: cid(b), 2: cid(c)}
    point = store.commit_point(session, "vm", [DiskDelta(SIZE, ids)], None, "crash", clock.now())
    damage = store.verify(point.point_id, ID_KEY)
    assert sorted(d.block_index for d in damage) == [0, 1]
    assert all("does not match its id" in d.what for d in damage)
    assert store.verify(point.point_id) == []  # without the id key only the frames are checked


# --- export: the ExportPoint stream and the CLI that decodes it ---------------------------
def _export_stream(store: VaultStore, point: PointInfo, encrypted: bool) -> Iterator[replication_pb2.ExportPart]:
    from cloudsvc.replication_api import PointsApi

    api = object.__new__(PointsApi)  # only what ExportPoint uses: the VM lookup and the reader
    api._vm = lambda request: ("vault", "vm", "vm")  # type: ignore[method-assign]
    api.repl = SimpleNamespace(  # type: ignore[assignment]
        read_point=lambda *args: (point, encrypted, store.read_frames(point.point_id, 0)))
    return api.ExportPoint(replication_pb2.ExportRequest(vault="v", vm="vm", point_id="latest"), None)  # type: ignore[arg-type]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("message", [0, 1], ids=["one-message", "message-per-block"])
def test_export_sends_a_group_once_and_the_cli_decodes_it(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, encrypted: bool, message: int
) -> None:
    import asrcli.point_cmds as point_cmds
    import cloudsvc.replication_api as replication_api

    if message:
        monkeypatch.setattr(replication_api, "_EXPORT_MESSAGE", message)
    rng = random.Random(46)
    aead = KEY.aead_key if encrypted else None
    store = make_store(LocalDirBackend(tmp_path / "a"), tmp_path / "idx.db", clock)
    blocks = {i: make_block(rng) for i in range(18)}
    point = _commit(store, blocks, [[0, 1, 2, 3, 4, 5, 6, 7], [9, 10, 11], [14, 15]], None, clock.now(), aead)
    parts = list(_export_stream(store, point, encrypted))
    assert parts[0].encrypted == encrypted and parts[0].virtual_size == SIZE
    sent = [(b, bytes(f)) for p in parts for b, f in zip(p.blocks, p.frames, strict=True)]
    assert [b for b, _ in sent] == sorted(blocks)
    assert b"".join(p.ids for p in parts) == b"".join(cid(blocks[i]) for i in sorted(blocks))
    whole = [b for b, f in sent if f]
    if message:
        assert whole == sorted(blocks)  # every message starts with a whole frame
    else:
        assert whole == [0, 8, 9, 12, 13, 14, 16, 17]  # a group sent once, not once per block

    monkeypatch.setenv("ASR_PROGRESS", "0")
    monkeypatch.setattr(point_cmds, "_stub", lambda c: SimpleNamespace(ExportPoint=lambda req, timeout: iter(parts)))
    key_file = tmp_path / "key"
    KEY.save(key_file)
    out = tmp_path / "disk0.raw"
    args = argparse.Namespace(out=str(out), encryption_key_file=str(key_file) if encrypted else None, json=True,
                              vault="v", vm="vm", point="latest", disk=0)
    doc, _ = point_cmds.point_export(SimpleNamespace(endpoint="test"), args)  # type: ignore[arg-type]
    assert doc["bytes_written"] == len(blocks) * cf.BLOCK_SIZE
    assert out.read_bytes() == _image(blocks)
