"""Chunk frames: how one chunk travels on the wire and rests in a pack.

Byte layout (integers little-endian)::

    offset  size  field
    0       4     magic b"ASRC"
    4       1     format version (1)
    5       1     flags: bit 0 compressed (zstd), bit 1 encrypted (AES-256-GCM)
    6       2     reserved, 0
    8       4     plaintext length
    12      4     payload length (bytes after the header and nonce; includes the GCM tag)
    16      4     key check: first 4 bytes of a BLAKE3 tag of the AEAD key, 0 if unencrypted
    20      12    nonce (present only when encrypted)
    20|32   n     payload: zstd level 1 of the plaintext, or the plaintext itself when
                  compression did not shrink it; encrypted with the header (bytes 0-19) as
                  associated data when bit 1 is set

The key check lets :func:`decode_chunk` tell "wrong key" (:class:`EncryptionKeyError`) from
"damaged frame" (:class:`DataCorrupt`): GCM alone fails the same way for both. It reveals
32 bits about a 256-bit key's hash, which is no help to an attacker.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass

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
_HEADER = struct.Struct("<4sBBHIII")
HEADER_SIZE = _HEADER.size  # 20
NONCE_SIZE = 12
TAG_SIZE = 16
# Tree nodes (up to fanout * 32 bytes) are frames too, so allow more than one block.
MAX_PLAINTEXT = 16 * 1024 * 1024
_KEY_CHECK_CONTEXT = "site-recovery chunkfmt v1 aead key check"


@dataclass(frozen=True)
class FrameHeader:
    flags: int
    plain_len: int
    payload_len: int
    key_check: int

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)

    @property
    def frame_len(self) -> int:
        return HEADER_SIZE + (NONCE_SIZE if self.encrypted else 0) + self.payload_len


class _ThreadCodecs(threading.local):
    """zstd contexts and AESGCM objects are costly to build and not thread-safe: keep one set
    per thread and reuse them for every chunk."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=1, write_content_size=True)
        self.decompressor = zstandard.ZstdDecompressor()
        self.aead: dict[bytes, AESGCM] = {}

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


def encode_chunk(plaintext: bytes | memoryview, aead_key: bytes | None) -> bytes:
    """Frame ``plaintext``: zstd level 1 (kept raw if that does not shrink it), then
    AES-256-GCM with a fresh random 96-bit nonce when ``aead_key`` is given."""
    plain_len = len(plaintext)
    if plain_len > MAX_PLAINTEXT:
        raise ValueError(f"chunk of {plain_len} bytes exceeds the frame limit")
    codecs = _codecs
    packed = codecs.compressor.compress(plaintext)
    flags = 0
    payload: bytes | memoryview
    if len(packed) < plain_len:
        flags |= FLAG_COMPRESSED
        payload = packed
    else:
        payload = plaintext
    if aead_key is None:
        header = _HEADER.pack(FRAME_MAGIC, FRAME_VERSION, flags, 0, plain_len, len(payload), 0)
        return header + payload
    flags |= FLAG_ENCRYPTED
    header = _HEADER.pack(
        FRAME_MAGIC, FRAME_VERSION, flags, 0, plain_len, len(payload) + TAG_SIZE,
        _key_check(aead_key),
    )
    nonce = os.urandom(NONCE_SIZE)
    sealed = codecs.aesgcm(aead_key).encrypt(nonce, bytes(payload), header)
    return b"".join((header, nonce, sealed))


def parse_header(frame: bytes | memoryview) -> FrameHeader:
    """Check the header and that the frame's length matches it; raise DataCorrupt if not.
    The cloud calls this on every uploaded frame: it cannot decrypt, but it can refuse junk."""
    if len(frame) < HEADER_SIZE:
        raise DataCorrupt("chunk frame is shorter than its header")
    magic, version, flags, reserved, plain_len, payload_len, key_check = _HEADER.unpack_from(
        frame, 0
    )
    if magic != FRAME_MAGIC:
        raise DataCorrupt("chunk frame has a bad magic number")
    if version != FRAME_VERSION:
        raise DataCorrupt(f"chunk frame has unsupported version {version}")
    if flags & ~(FLAG_COMPRESSED | FLAG_ENCRYPTED) or reserved:
        raise DataCorrupt("chunk frame has unknown flags")
    if plain_len > MAX_PLAINTEXT:
        raise DataCorrupt("chunk frame declares an impossible length")
    hdr = FrameHeader(flags, plain_len, payload_len, key_check)
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
) -> bytes:
    """Return the plaintext of ``frame``.

    Raises :class:`EncryptionKeyError` when the frame is encrypted and no key or a different
    key is given, and :class:`DataCorrupt` when the frame is damaged, or when ``expected_id``
    and ``id_key`` are given and the plaintext does not hash to ``expected_id``.
    """
    hdr = parse_header(frame)
    view = memoryview(frame)
    payload: bytes | memoryview
    if hdr.encrypted:
        if aead_key is None:
            raise EncryptionKeyError("the chunk is encrypted and no customer-managed key was given")
        if _key_check(aead_key) != hdr.key_check:
            raise EncryptionKeyError(
                "the chunk was encrypted with a different key than the one supplied"
            )
        nonce = bytes(view[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE])
        try:
            payload = _codecs.aesgcm(aead_key).decrypt(
                nonce, bytes(view[HEADER_SIZE + NONCE_SIZE :]), bytes(view[:HEADER_SIZE])
            )
        except InvalidTag as exc:
            raise DataCorrupt("chunk frame failed authentication (tampered or damaged)") from exc
    else:
        if aead_key is not None:
            # An encrypted VM's chunk must never come back unencrypted: a store that swapped
            # in plaintext frames would otherwise go unnoticed.
            raise DataCorrupt("expected an encrypted chunk frame but found an unencrypted one")
        payload = view[HEADER_SIZE:]
    if hdr.compressed:
        try:
            plaintext = _codecs.decompressor.decompress(payload, max_output_size=hdr.plain_len)
        except zstandard.ZstdError as exc:
            raise DataCorrupt("chunk frame payload does not decompress") from exc
    else:
        plaintext = bytes(payload)
    if len(plaintext) != hdr.plain_len:
        raise DataCorrupt("chunk frame plaintext length does not match its header")
    if expected_id is not None and id_key is not None:
        if chunk_id(id_key, plaintext) != expected_id:
            raise DataCorrupt("chunk content does not match its id")
    return plaintext
