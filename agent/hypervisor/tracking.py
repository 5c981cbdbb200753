"""Per-disk change tracking: a dirty-block bitmap file, like Hyper-V Replica's log / RCT.

File layout (``disk<N>.dirty``), little-endian::

    0   8  magic "ASRDIRT1"
    8   4  block size (bytes)
    12  4  flags: bit 0 UNSYNCED (bits changed since the last fsync)
    16  8  disk size (bytes) the bitmap was made for
    24  16 boot id of the host that last set UNSYNCED
    40  24 reserved
    64  .. bitmap, bit b of byte b//8 = block b dirty

A log is *trusted* only when it exists, parses, was made for the disk's current size, and was
not left UNSYNCED by an earlier boot of the host (bits set after the last fsync may have been
lost in a crash, while the data writes they describe may have reached the disk). An untrusted
log makes the caller resynchronise by comparing hashes. Every function here runs under the VM
lock; none caches anything.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import portablefile
from chunkfmt.ids import BLOCK_SIZE  # tracking granularity = chunk size, one owner
from durablefile import write_atomic

MAGIC = b"ASRDIRT1"
HEADER = struct.Struct("<8sIIQ16s24x")
UNSYNCED = 1
_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def _boot_id() -> bytes:
    try:
        with open(_BOOT_ID_FILE, "rb") as fh:
            return bytes.fromhex(fh.read().decode().strip().replace("-", ""))[:16]
    except OSError:
        return b"\0" * 16


BOOT_ID = _boot_id()


def block_count(disk_size: int) -> int:
    return -(-disk_size // BLOCK_SIZE)


def blocks_touched(offset: int, length: int) -> range:
    if length <= 0:
        return range(0)
    return range(offset // BLOCK_SIZE, (offset + length - 1) // BLOCK_SIZE + 1)


def write_log(path: Path, disk_size: int, bits: bytes | None = None) -> None:
    """Atomically replace ``path`` with a trusted, synced log holding ``bits`` (default: clean)."""
    size = (block_count(disk_size) + 7) // 8
    body = bytes(bits) if bits is not None else bytes(size)
    assert len(body) == size
    write_atomic(path, HEADER.pack(MAGIC, BLOCK_SIZE, 0, disk_size, BOOT_ID) + body)


def all_dirty(disk_size: int) -> bytes:
    n = block_count(disk_size)
    bits = bytearray(b"\xff" * ((n + 7) // 8))
    if n % 8:
        bits[-1] = (1 << (n % 8)) - 1
    return bytes(bits)


def read_log(path: Path, disk_size: int) -> bytes | None:
    """The bitmap, or None when the log is missing or cannot be trusted."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) < HEADER.size:
        return None
    magic, bs, flags, size, boot = HEADER.unpack_from(raw)
    if magic != MAGIC or bs != BLOCK_SIZE or size != disk_size:
        return None
    if flags & UNSYNCED and boot != BOOT_ID:
        return None  # the host went down with bits that never reached the disk
    bits = raw[HEADER.size:]
    if len(bits) != (block_count(disk_size) + 7) // 8:
        return None
    return bits


def mark(path: Path, blocks: range) -> None:
    """Set the bits of ``blocks``. A missing or foreign log is left alone: it is untrusted."""
    if not blocks:
        return
    try:
        fd = portablefile.open_fd(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        head = portablefile.pread(fd, HEADER.size, 0)
        if len(head) != HEADER.size:
            return
        magic, bs, flags, size, boot = HEADER.unpack(head)
        if magic != MAGIC or block_count(size) < blocks.stop:
            return
        if not flags & UNSYNCED or boot != BOOT_ID:
            portablefile.pwrite(fd, HEADER.pack(magic, bs, flags | UNSYNCED, size, BOOT_ID), 0)
        first, last = blocks.start // 8, (blocks.stop - 1) // 8
        cur = bytearray(portablefile.pread(fd, last - first + 1, HEADER.size + first))
        for b in blocks:
            cur[b // 8 - first] |= 1 << (b % 8)
        portablefile.pwrite(fd, bytes(cur), HEADER.size + first)
    finally:
        os.close(fd)


def sync(path: Path) -> None:
    """fsync the bits, then clear UNSYNCED (so a later crash cannot make the log untrusted)."""
    try:
        fd = portablefile.open_fd(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        head = portablefile.pread(fd, HEADER.size, 0)
        if len(head) != HEADER.size:
            return
        magic, bs, flags, size, boot = HEADER.unpack(head)
        if magic != MAGIC or not flags & UNSYNCED:
            return
        os.fsync(fd)
        portablefile.pwrite(fd, HEADER.pack(magic, bs, flags & ~UNSYNCED, size, boot), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def merge_into(captured: bytes | None, current_path: Path, disk_size: int) -> None:
    """current := current | captured; untrusted if either side is (used by abort/recovery)."""
    current = read_log(current_path, disk_size)
    if captured is None or current is None:
        current_path.unlink(missing_ok=True)
        return
    write_log(current_path, disk_size, bytes(a | b for a, b in zip(current, captured, strict=True)))


def bits_to_list(bits: bytes) -> list[int]:
    out = []
    for i, byte in enumerate(bits):
        if byte:
            for j in range(8):
                if byte >> j & 1:
                    out.append(i * 8 + j)
    return out
