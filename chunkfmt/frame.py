"""Chunk frames: how one chunk travels on the wire and rests in a pack.

Byte layout (integers little-endian)::

    offset  size  field
    0       4     magic b"ASRC"
    4       1     format version (1)
    5       1     flags: bit 0 compressed (zstd), bit 1 encrypted (AES-256-GCM),
                  bit 2 group (several chunks in one frame)
    6       2     group: the number of member chunks m; 0 otherwise
    8       4     plaintext length
    12      4     payload length (bytes after the header, table and nonce; includes the tag)
    16      4     key check: first 4 bytes of a BLAKE3 tag of the AEAD key, 0 if unencrypted
    20      36*m  group only, the member table: per member its chunk id (32) and plaintext
                  length (4); the plaintext is the members' plaintexts in table order
    T       12    nonce (present only when encrypted)
    T|T+12  n     payload: zstd of the plaintext, or the plaintext itself when compression
                  did not shrink it; encrypted with the header and table (bytes 0..T) as
                  associated data when bit 1 is set

A group frame (:func:`encode_group`) compresses up to a few dozen blocks together: zstd finds
more to share across 1 MiB than inside 64 KiB (the ``balanced`` and ``strong`` compression of
a policy, see :data:`COMPRESSION`). Chunk ids stay per block, so dedup is unchanged; the table is in the
clear (the cloud sees chunk ids anyway) and authenticated, so the cloud can index every
member of a frame it cannot decrypt. Reading one member decodes the whole frame; a
thread's last decoded group is kept, because readers go through a disk in block order.

The key check lets :func:`decode_chunk` tell "wrong key" (:class:`EncryptionKeyError`) from
"damaged frame" (:class:`DataCorrupt`): GCM alone fails the same way for both. It reveals
32 bits about a 256-bit key's hash, which is no help to an attacker.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from asrerrors import DataCorrupt, EncryptionKeyError
from chunkfmt.ids import chunk_id

FRAME_MAGIC = b"ASRC"
FRAME_VERSION = 1
FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02
FLAG_GROUP = 0x04
_FLAGS = FLAG_COMPRESSED | FLAG_ENCRYPTED | FLAG_GROUP
_HEADER = struct.Struct("<4sBBHIII")
_MEMBER = struct.Struct("<32sI")  # 36 bytes per member of a group
HEADER_SIZE = _HEADER.size  # 20
NONCE_SIZE = 12
TAG_SIZE = 16
# Tree nodes (up to fanout * 32 bytes) are frames too, so allow more than one block.
MAX_PLAINTEXT = 16 * 1024 * 1024
_KEY_CHECK_CONTEXT = "site-recovery chunkfmt v1 aead key check"
MAX_MEMBERS = 256


class Compression(NamedTuple):
    """How a policy's blocks are framed: ``per_frame`` new blocks of a window at most in one
    frame, compressed at ``level``; a block that is alone (its window had no other new
    block) at ``lone_level``. An encrypted VM's blocks are framed one by one at
    ``lone_level`` under every policy (:meth:`for_vm`): the cloud cannot open an encrypted
    group to regroup it when its members die at different times, so it would keep every
    dead member until the last one dies. Under scattered overwrites that made an encrypted
    ``strong`` VM store 1.30x ``balanced`` after 30 hours, still climbing
    (bench/group_space.py), the opposite of what ``strong`` is chosen for."""

    level: int
    per_frame: int
    lone_level: int

    def for_vm(self, encrypted: bool) -> Compression:
        """What a VM of this policy uses: one frame per block for an encrypted VM."""
        if encrypted and self.per_frame > 1:
            return Compression(self.lone_level, 1, self.lone_level)
        return self


# A policy's compression (``--compression``). ``balanced`` (the default) compresses up to 32
# new blocks of a window together at zstd level 2: on real file systems ~14% fewer bytes sent
# and stored than one 64 KiB block at a time at level 1 (what ``balanced`` was until
# 2026-12-03), for ~10% more compression CPU; grouping itself costs no CPU (zstd level 1 runs
# as fast over 32 blocks as over one), the level does, and 64 blocks stored no less end to
# end (docs/benchmarks.md). ``strong`` compresses up to 64 at level 3: ~6% fewer bytes again
# for ~1.5x the compression CPU. An encrypted VM's blocks stay one per frame under both (see
# ``Compression``). ``fast`` spends the least CPU (hosts short of it). A block alone in its
# window is framed at level 1 (``lone_level``) by both: level 2 or 3 gains ~2% on 64 KiB
# alone, and small scattered writes are most of what a busy site's cycles carry
# (bench/load.py). Measured in docs/benchmarks.md ("Compression per policy").
COMPRESSION: dict[str, Compression] = {"fast": Compression(-1, 1, -1), "balanced": Compression(2, 32, 1),
                                       "strong": Compression(3, 64, 1)}
DEFAULT_COMPRESSION = "balanced"


@dataclass(frozen=True)
class FrameHeader:
    flags: int
    plain_len: int
    payload_len: int
    key_check: int
    members: tuple[tuple[bytes, int], ...] = ()  # a group's (chunk id, plaintext length)

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)

    @property
    def group(self) -> bool:
        return bool(self.flags & FLAG_GROUP)

    @property
    def head_len(self) -> int:
        """Bytes of header and member table: the associated data of an encrypted frame."""
        return HEADER_SIZE + _MEMBER.size * len(self.members)

    @property
    def frame_len(self) -> int:
        return self.head_len + (NONCE_SIZE if self.encrypted else 0) + self.payload_len

    def ids(self) -> list[bytes]:
        """The chunk ids this frame holds: a group's members (the caller knows a single
        chunk's id; it is not in its frame)."""
        return [cid for cid, _ in self.members]


class _ThreadCodecs(threading.local):
    """zstd contexts and AESGCM objects are costly to build and not thread-safe: keep one set
    per thread and reuse them for every chunk."""

    def __init__(self) -> None:
        self.compressors: dict[int, zstandard.ZstdCompressor] = {}
        self.decompressor = zstandard.ZstdDecompressor()
        self.aead: dict[bytes, AESGCM] = {}
        # the last group decoded: (frame, aead key, plaintext, member -> (offset, length))
        self.group: tuple[bytes, bytes | None, bytes, dict[bytes, tuple[int, int]]] | None = None

    def compressor(self, level: int) -> zstandard.ZstdCompressor:
        comp = self.compressors.get(level)
        if comp is None:
            comp = self.compressors[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
        return comp

    def aesgcm(self, key: bytes) -> AESGCM:
        obj = self.aead.get(key)
        if obj is None:
            if len(key) != 32:
                raise EncryptionKeyError("the AEAD key must be 32 bytes (AES-256)")
            if len(self.aead) > 16:  # bounded: a process serves a handful of keys
                self.aead.clear()
            obj = self.aead[key] = AESGCM(key)
        return obj


_codecs = _ThreadCodecs()
_key_checks: dict[bytes, int] = {}


def _key_check(key: bytes) -> int:
    check = _key_checks.get(key)
    if check is None:
        digest = blake3.blake3(key, derive_key_context=_KEY_CHECK_CONTEXT).digest()
        # 0 is reserved for "unencrypted", so an encrypted frame never carries it.
        check = int.from_bytes(digest[:4], "little") or 1
        if len(_key_checks) > 64:
            _key_checks.clear()
        _key_checks[key] = check
    return check


def encode_chunk(plaintext: bytes | memoryview, aead_key: bytes | None, level: int = 1) -> bytes:
    """Frame ``plaintext``: zstd at ``level`` (kept raw if that does not shrink it), then
    AES-256-GCM with a fresh random 96-bit nonce when ``aead_key`` is given."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError(f"chunk of {len(plaintext)} bytes exceeds the frame limit")
    return _seal(plaintext, aead_key, level, b"", 0, 0)


def encode_group(members: Sequence[tuple[bytes, bytes | memoryview]], aead_key: bytes | None,
                 level: int = 3) -> bytes:
    """One frame of several chunks ``(chunk id, plaintext)`` (distinct ids), compressed
    together. A single member is framed as an ordinary chunk."""
    if len(members) == 1:
        return encode_chunk(members[0][1], aead_key, level)
    if not 1 < len(members) <= MAX_MEMBERS:
        raise ValueError(f"a group frame holds 2 to {MAX_MEMBERS} chunks, not {len(members)}")
    if len({cid for cid, _ in members}) != len(members):
        raise ValueError("a group frame's chunk ids must be distinct")
    table = b"".join(_MEMBER.pack(cid, len(data)) for cid, data in members)
    plaintext = b"".join(data for _, data in members)
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError(f"group of {len(plaintext)} bytes exceeds the frame limit")
    return _seal(plaintext, aead_key, level, table, FLAG_GROUP, len(members))


def _seal(plaintext: bytes | memoryview, aead_key: bytes | None, level: int, table: bytes,
          flags: int, count: int) -> bytes:
    plain_len = len(plaintext)
    codecs = _codecs
    packed = codecs.compressor(level).compress(plaintext)
    payload: bytes | memoryview
    if len(packed) < plain_len:
        flags |= FLAG_COMPRESSED
        payload = packed
    else:
        payload = plaintext
    if aead_key is None:
        header = _HEADER.pack(FRAME_MAGIC, FRAME_VERSION, flags, count, plain_len, len(payload), 0)
        return b"".join((header, table, payload)) if table else header + payload
    flags |= FLAG_ENCRYPTED
    header = _HEADER.pack(
        FRAME_MAGIC, FRAME_VERSION, flags, count, plain_len, len(payload) + TAG_SIZE,
        _key_check(aead_key),
    )
    head = header + table
    nonce = os.urandom(NONCE_SIZE)
    sealed = codecs.aesgcm(aead_key).encrypt(nonce, bytes(payload), head)
    return b"".join((head, nonce, sealed))


def rewritable_group(head: bytes | memoryview) -> bool:
    """True if the frame starting with ``head`` (at least its first HEADER_SIZE bytes) is an
    unencrypted group frame: one whose live members the cloud can re-frame without the
    dead ones (:func:`regroup`). An encrypted one it cannot open."""
    if len(head) < HEADER_SIZE:
        return False
    magic, version, flags, _count, _plain, _payload, _check = _HEADER.unpack_from(head, 0)
    return magic == FRAME_MAGIC and version == FRAME_VERSION and bool(flags & FLAG_GROUP) \
        and not flags & FLAG_ENCRYPTED


def regroup(frame: bytes, keep: Sequence[bytes]) -> bytes:
    """A new frame of only the members ``keep`` of the unencrypted group ``frame``, in the
    member table's order: a group when two or more remain, an ordinary frame for one, at the
    ``strong`` levels (the cloud's maintenance spends the CPU once). Every kept member is checked
    to read back from the new frame before it is returned. Raises DataCorrupt when the frame
    does not hold a member asked for, ValueError when it is not an unencrypted group."""
    hdr = parse_header(frame)
    if not hdr.group or hdr.encrypted:
        raise ValueError("only an unencrypted group frame can be regrouped")
    plaintext = _open(hdr, frame, None)
    spans = _spans(hdr)
    wanted = set(keep)
    if not wanted:
        raise ValueError("regrouping keeps at least one member")
    missing = wanted - spans.keys()
    if missing:
        raise DataCorrupt(f"chunk frame does not hold chunk {min(missing).hex()}")
    members = [(cid, plaintext[o:o + n]) for cid, (o, n) in spans.items() if cid in wanted]
    comp = COMPRESSION["strong"]
    out = (encode_group(members, None, comp.level) if len(members) > 1
           else encode_chunk(members[0][1], None, comp.lone_level))
    for cid, data in members:
        if decode_chunk(bytes(out), None, chunk=cid) != data:
            raise DataCorrupt("a regrouped frame does not read back its members")  # never expected
    return out


def parse_header(frame: bytes | memoryview) -> FrameHeader:
    """Check the header (and a group's member table) and that the frame's length matches
    it; raise DataCorrupt if not. The cloud calls this on every uploaded frame: it cannot
    decrypt, but it can refuse junk, and it learns a group's member ids."""
    if len(frame) < HEADER_SIZE:
        raise DataCorrupt("chunk frame is shorter than its header")
    magic, version, flags, count, plain_len, payload_len, key_check = _HEADER.unpack_from(
        frame, 0
    )
    if magic != FRAME_MAGIC:
        raise DataCorrupt("chunk frame has a bad magic number")
    if version != FRAME_VERSION:
        raise DataCorrupt(f"chunk frame has unsupported version {version}")
    if flags & ~_FLAGS or (count != 0) != bool(flags & FLAG_GROUP):
        raise DataCorrupt("chunk frame has unknown flags")
    if plain_len > MAX_PLAINTEXT:
        raise DataCorrupt("chunk frame declares an impossible length")
    members: tuple[tuple[bytes, int], ...] = ()
    if count:
        if count < 2 or count > MAX_MEMBERS or len(frame) < HEADER_SIZE + _MEMBER.size * count:
            raise DataCorrupt("chunk frame's member table is damaged")
        members = tuple(_MEMBER.iter_unpack(bytes(frame[HEADER_SIZE:HEADER_SIZE + _MEMBER.size * count])))
        if sum(n for _, n in members) != plain_len or len({c for c, _ in members}) != count:
            raise DataCorrupt("chunk frame's member table does not match its plaintext")
    hdr = FrameHeader(flags, plain_len, payload_len, key_check, members)
    if hdr.encrypted == (key_check == 0):
        raise DataCorrupt("chunk frame key check does not match its encryption flag")
    if hdr.frame_len != len(frame):
        raise DataCorrupt(
            f"chunk frame is {len(frame)} bytes but its header says {hdr.frame_len}"
        )
    return hdr


def decode_chunk(
    frame: bytes | memoryview,
    aead_key: bytes | None,
    expected_id: bytes | None = None,
    id_key: bytes | None = None,
    chunk: bytes | None = None,
) -> bytes:
    """Return the plaintext of ``frame``, or of its member ``chunk`` (default
    ``expected_id``) when it is a group frame.

    Raises :class:`EncryptionKeyError` when the frame is encrypted and no key or a different
    key is given, and :class:`DataCorrupt` when the frame is damaged, when a group does not
    hold the chunk asked for, or when ``expected_id`` and ``id_key`` are given and the
    plaintext does not hash to ``expected_id``.
    """
    member = chunk if chunk is not None else expected_id
    cached = _codecs.group
    if cached is not None and cached[0] is frame and cached[1] == aead_key and member is not None:
        # the same frame object again (a reader going through its members): decoded and
        # authenticated already
        plaintext, where = cached[2], cached[3]
        hdr = None
    else:
        hdr = parse_header(frame)
        plaintext = _open(hdr, frame, aead_key)
        where = _spans(hdr)
        if hdr.group:
            if isinstance(frame, bytes):
                _codecs.group = (frame, aead_key, plaintext, where)
    if hdr is None or hdr.group:
        if member is None:
            raise ValueError("reading a group frame needs the chunk id of the member")
        span = where.get(member)
        if span is None:
            raise DataCorrupt(f"chunk frame does not hold chunk {member.hex()}")
        plaintext = plaintext[span[0]:span[0] + span[1]]
    if expected_id is not None and id_key is not None:
        if chunk_id(id_key, plaintext) != expected_id:
            raise DataCorrupt("chunk content does not match its id")
    return plaintext


def _spans(hdr: FrameHeader) -> dict[bytes, tuple[int, int]]:
    """A group's members: chunk id -> (offset, length) in its plaintext (empty otherwise)."""
    spans: dict[bytes, tuple[int, int]] = {}
    at = 0
    for cid, n in hdr.members:
        spans[cid] = (at, n)
        at += n
    return spans


def _open(hdr: FrameHeader, frame: bytes | memoryview, aead_key: bytes | None) -> bytes:
    """Authenticate, decrypt and decompress a parsed frame: its whole plaintext."""
    view = memoryview(frame)
    start = hdr.head_len
    payload: bytes | memoryview
    if hdr.encrypted:
        if aead_key is None:
            raise EncryptionKeyError("the chunk is encrypted and no customer-managed key was given")
        if _key_check(aead_key) != hdr.key_check:
            raise EncryptionKeyError(
                "the chunk was encrypted with a different key than the one supplied"
            )
        nonce = bytes(view[start : start + NONCE_SIZE])
        try:
            payload = _codecs.aesgcm(aead_key).decrypt(
                nonce, bytes(view[start + NONCE_SIZE :]), bytes(view[:start])
            )
        except InvalidTag as exc:
            raise DataCorrupt("chunk frame failed authentication (tampered or damaged)") from exc
    else:
        if aead_key is not None:
            # An encrypted VM's chunk must never come back unencrypted: a store that swapped
            # in plaintext frames would otherwise go unnoticed.
            raise DataCorrupt("expected an encrypted chunk frame but found an unencrypted one")
        payload = view[start:]
    if hdr.compressed:
        try:
            plaintext = _codecs.decompressor.decompress(payload, max_output_size=hdr.plain_len)
        except zstandard.ZstdError as exc:
            raise DataCorrupt("chunk frame payload does not decompress") from exc
    else:
        plaintext = bytes(payload)
    if len(plaintext) != hdr.plain_len:
        raise DataCorrupt("chunk frame plaintext length does not match its header")
    return plaintext
