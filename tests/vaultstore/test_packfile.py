"""The pack format (cloudsvc/vaultstore/packfile.py): sealing into a reused buffer gives the
same bytes as sealing afresh, the trailer parses back to the entries, and the name (the
trailer digest) changes whenever any blob byte does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from asrerrors import DataCorrupt
from cloudsvc.vaultstore.packfile import (
    ENTRY,
    FOOTER,
    KIND_CHUNK,
    KIND_NODE,
    PACK_MAGIC,
    PackBuilder,
    blob_hash,
    footer_count,
    name_for_digest,
    pack_name,
    parse_trailer,
    read_trailer,
)

blobs = st.lists(st.tuples(st.sampled_from([KIND_CHUNK, KIND_NODE]), st.binary(min_size=32, max_size=32),
                           st.binary(min_size=1, max_size=3000)),
                 min_size=1, max_size=12, unique_by=lambda b: b[1])


def build(items: list[tuple[int, bytes, bytes]]) -> PackBuilder:
    pack = PackBuilder()
    for kind, blob_id, data in items:
        pack.add(kind, blob_id, data)
    return pack


@settings(max_examples=80, deadline=None)
@given(blobs, st.integers(0, 60000))
def test_seal_into_a_reused_buffer_equals_seal(items: list[tuple[int, bytes, bytes]], left: int) -> None:
    fresh = build(items).seal()
    buffer = bytearray(b"\xaa" * left)  # what an earlier, maybe larger, pack left in it
    with build(items).seal_into(buffer) as view:
        assert bytes(view) == fresh
    entries = parse_trailer(fresh[-(footer_count(fresh[-FOOTER.size:]) * ENTRY.size + FOOTER.size):], len(fresh))
    assert [(e.kind, e.id) for e in entries] == [(k, i) for k, i, _ in items]
    for e, (_, _, data) in zip(entries, items, strict=True):
        assert fresh[e.offset:e.offset + e.length] == data


@settings(max_examples=80, deadline=None)
@given(blobs, st.data())
def test_name_addresses_the_content(items: list[tuple[int, bytes, bytes]], data: st.DataObject) -> None:
    name = pack_name(build(items).seal())
    assert name == pack_name(build(items).seal())  # a re-put writes the same name
    which = data.draw(st.integers(0, len(items) - 1))
    kind, blob_id, blob = items[which]
    at = data.draw(st.integers(0, len(blob) - 1))
    changed = blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1:]
    other = [*items[:which], (kind, blob_id, changed), *items[which + 1:]]
    assert pack_name(build(other).seal()) != name


def _damage_found(pack: bytes, name: str) -> bool:
    """What verify checks of a stored pack, on bytes: both magics, the trailer (count,
    checksum), the name, every blob against its entry."""
    if pack[:len(PACK_MAGIC)] != PACK_MAGIC:
        return True
    try:
        entries, digest = read_trailer(lambda offset, length: pack[offset:offset + length], len(pack))
    except DataCorrupt:
        return True
    if name_for_digest(digest) != name:
        return True
    return any(blob_hash(pack[e.offset:e.offset + e.length]) != e.hash for e in entries)


@settings(max_examples=150, deadline=None)
@given(blobs, st.data())
def test_every_byte_of_a_pack_is_covered_by_a_check(items: list[tuple[int, bytes, bytes]], data: st.DataObject) -> None:
    pack = build(items).seal()
    name = pack_name(pack)
    assert not _damage_found(pack, name)
    at = data.draw(st.integers(0, len(pack) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = pack[:at] + bytes([pack[at] ^ (1 << bit)]) + pack[at + 1:]
    assert _damage_found(damaged, name), f"a flipped bit at {at} of {len(pack)} went unnoticed"
