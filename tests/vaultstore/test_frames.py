"""Chunk frames and the customer-managed key."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chunkfmt as cf
from asrerrors import DataCorrupt, EncryptionKeyError

KEY = cf.CustomerKey(bytes(range(32)))
OTHER = cf.CustomerKey(bytes(range(1, 33)))
block_data = st.one_of(
    st.binary(max_size=cf.BLOCK_SIZE),
    st.builds(lambda b, n: (b * (cf.BLOCK_SIZE // max(1, len(b)) + 1))[:n],
              st.binary(min_size=1, max_size=64), st.integers(0, cf.BLOCK_SIZE)),
)


@settings(max_examples=60, deadline=None)
@given(data=block_data, encrypted=st.booleans())
def test_round_trip(data: bytes, encrypted: bool) -> None:
    aead = KEY.aead_key if encrypted else None
    frame = cf.encode_chunk(data, aead)
    hdr = cf.parse_header(frame)
    assert hdr.encrypted == encrypted
    assert len(frame) <= len(data) + cf.HEADER_SIZE + cf.NONCE_SIZE + 16
    cid = cf.chunk_id(KEY.id_key, data)
    assert cf.decode_chunk(frame, aead, expected_id=cid, id_key=KEY.id_key) == data


@settings(max_examples=80, deadline=None)
@given(data=st.binary(min_size=1, max_size=4096), encrypted=st.booleans(),
       where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(data: bytes, encrypted: bool, where: float, bit: int) -> None:
    aead = KEY.aead_key if encrypted else None
    frame = bytearray(cf.encode_chunk(data, aead))
    frame[int(where * len(frame))] ^= 1 << bit
    # Unencrypted frames carry no MAC: the id check is what catches damage there.
    with pytest.raises((DataCorrupt, EncryptionKeyError)):
        cf.decode_chunk(bytes(frame), aead, cf.chunk_id(KEY.id_key, data), KEY.id_key)


def _members(blocks: list[bytes]) -> list[tuple[bytes, bytes]]:
    by_id = {cf.chunk_id(KEY.id_key, b): b for b in blocks}
    return list(by_id.items())


@settings(max_examples=40, deadline=None)
@given(blocks=st.lists(block_data, min_size=2, max_size=20), encrypted=st.booleans(),
       compression=st.sampled_from(sorted(cf.COMPRESSION)))
def test_group_round_trip(blocks: list[bytes], encrypted: bool, compression: str) -> None:
    members = _members(blocks)
    aead = KEY.aead_key if encrypted else None
    frame = cf.encode_group(members, aead, cf.COMPRESSION[compression][0])
    hdr = cf.parse_header(frame)
    assert hdr.encrypted == encrypted
    if len(members) == 1:  # a group of one is an ordinary chunk frame
        assert not hdr.group
        assert cf.decode_chunk(frame, aead) == members[0][1]
        return
    assert hdr.group and hdr.ids() == [cid for cid, _ in members]
    # in order (the decoded group is reused), then backwards with another frame between
    for cid, data in members:
        assert cf.decode_chunk(frame, aead, expected_id=cid, id_key=KEY.id_key) == data
    for cid, data in reversed(members):
        cf.decode_chunk(cf.encode_chunk(b"other", aead), aead)
        assert cf.decode_chunk(bytes(frame), aead, chunk=cid) == data


@settings(max_examples=40, deadline=None)
@given(blocks=st.lists(block_data, min_size=2, max_size=12), keep=st.lists(st.booleans(), min_size=12, max_size=12))
def test_regroup_keeps_exactly_the_live_members(blocks: list[bytes], keep: list[bool]) -> None:
    """What the collector writes for a partly dead unencrypted group: a frame of the kept
    members only, in the table's order, each reading back; one kept member makes an
    ordinary frame. An encrypted group cannot be regrouped, nor can a member it lacks be kept."""
    members = _members(blocks)
    if len(members) < 2:
        return
    frame = cf.encode_group(members, None, 3)
    assert cf.rewritable_group(frame[:cf.HEADER_SIZE])
    kept = [cid for (cid, _), k in zip(members, keep, strict=False) if k] or [members[-1][0]]
    out = cf.regroup(frame, list(reversed(kept)))
    hdr = cf.parse_header(out)
    assert not hdr.encrypted and (hdr.ids() == kept if len(kept) > 1 else not hdr.group)
    for cid, data in members:
        if cid in kept:
            assert cf.decode_chunk(out, None, expected_id=cid, id_key=KEY.id_key, chunk=cid) == data
        else:
            with pytest.raises(DataCorrupt):
                cf.decode_chunk(out, None, chunk=cid) if hdr.group else cf.decode_chunk(
                    out, None, expected_id=cid, id_key=KEY.id_key)
    with pytest.raises(DataCorrupt):
        cf.regroup(frame, [bytes(32)])
    sealed = cf.encode_group(members, KEY.aead_key, 3)
    assert not cf.rewritable_group(sealed) and not cf.rewritable_group(cf.encode_chunk(blocks[0], None))
    with pytest.raises(ValueError):
        cf.regroup(sealed, kept)


@settings(max_examples=80, deadline=None)
@given(blocks=st.lists(st.binary(min_size=1, max_size=2048), min_size=2, max_size=5, unique=True),
       encrypted=st.booleans(), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_group_any_flipped_bit_is_detected(blocks: list[bytes], encrypted: bool, where: float, bit: int) -> None:
    members = _members(blocks)
    aead = KEY.aead_key if encrypted else None
    frame = bytearray(cf.encode_group(members, aead))
    frame[int(where * len(frame))] ^= 1 << bit
    # A flip inside one member's bytes of an unencrypted group shows only when that member
    # is read: reading them all must find it.
    failures = 0
    for cid, _ in members:
        try:
            cf.decode_chunk(bytes(frame), aead, cid, KEY.id_key)
        except (DataCorrupt, EncryptionKeyError):
            failures += 1
    assert failures


def test_group_member_must_be_named_and_held() -> None:
    members = _members([b"a" * 100, b"b" * 100])
    frame = cf.encode_group(members, None)
    with pytest.raises(ValueError, match="chunk id of the member"):
        cf.decode_chunk(frame, None)
    with pytest.raises(DataCorrupt, match="does not hold chunk"):
        cf.decode_chunk(frame, None, chunk=bytes(31) + b"\1")
    with pytest.raises(ValueError, match="distinct"):
        cf.encode_group([members[0], members[0]], None)


def test_group_reuse_never_skips_the_key_check() -> None:
    members = _members([b"a" * 100, b"b" * 100])
    frame = cf.encode_group(members, KEY.aead_key)
    assert cf.decode_chunk(frame, KEY.aead_key, chunk=members[0][0]) == members[0][1]
    with pytest.raises(EncryptionKeyError, match="different key"):
        cf.decode_chunk(frame, OTHER.aead_key, chunk=members[1][0])
    with pytest.raises(EncryptionKeyError, match="no customer-managed key"):
        cf.decode_chunk(frame, None, chunk=members[1][0])


def test_wrong_or_missing_key_is_a_key_error() -> None:
    frame = cf.encode_chunk(b"secret" * 1000, KEY.aead_key)
    with pytest.raises(EncryptionKeyError, match="different key"):
        cf.decode_chunk(frame, OTHER.aead_key)
    with pytest.raises(EncryptionKeyError, match="no customer-managed key"):
        cf.decode_chunk(frame, None)
    with pytest.raises(DataCorrupt, match="unencrypted"):
        cf.decode_chunk(cf.encode_chunk(b"x", None), KEY.aead_key)


def test_incompressible_is_stored_raw_and_zero_id_reserved() -> None:
    data = os.urandom(cf.BLOCK_SIZE)
    assert not cf.parse_header(cf.encode_chunk(data, None)).compressed
    assert cf.parse_header(cf.encode_chunk(bytes(cf.BLOCK_SIZE), None)).compressed
    assert cf.ZERO_ID == bytes(32) and cf.is_zero_block(bytes(100))
    assert cf.chunk_id(cf.vault_id_key("a"), b"x") != cf.chunk_id(cf.vault_id_key("b"), b"x")


def test_truncated_frame() -> None:
    frame = cf.encode_chunk(b"abc" * 100, None)
    for cut in (0, 5, len(frame) - 1):
        with pytest.raises(DataCorrupt):
            cf.decode_chunk(frame[:cut], None)


def test_customer_key_file(tmp_path: Path) -> None:
    key = cf.CustomerKey.generate()
    path = tmp_path / "cmk.json"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = cf.CustomerKey.load(path)
    assert loaded.fingerprint == key.fingerprint and loaded.aead_key == key.aead_key
    assert key.id_key != key.aead_key and len(key.id_key) == 32
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and doc["fingerprint"] == key.fingerprint
    with pytest.raises(EncryptionKeyError, match="does not exist"):
        cf.CustomerKey.load(tmp_path / "nope.json")
    doc["key"] = doc["key"][:-4] + "AAA="  # a damaged key no longer matches its fingerprint
    path.write_text(json.dumps(doc))
    with pytest.raises(EncryptionKeyError, match="damaged"):
        cf.CustomerKey.load(path)
    path.write_text("{not json")
    with pytest.raises(EncryptionKeyError, match="damaged"):
        cf.CustomerKey.load(path)
