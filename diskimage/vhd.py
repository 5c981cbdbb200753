"""VHD (Virtual PC / Hyper-V "vpc") images: footer, dynamic header, and a writer.

Layout (big-endian): a fixed VHD is the raw disk followed by a 512-byte footer. A dynamic or
differencing VHD starts with a copy of the footer, then a 1024-byte dynamic header, then the
BAT (one uint32 sector offset per block, 0xFFFFFFFF = unallocated); each allocated block is a
sector bitmap (padded to 512 bytes) followed by the block's data; the footer ends the file.

Allocation order (crash safety): the footer is first written at the new end of the file, then
the block (bitmap + data) where the old footer was, then fsync, and only then the BAT entry
that points at the block. A crash at any point leaves either the old content or the new one,
and never a BAT entry pointing at unwritten data.
"""

from __future__ import annotations

import os
import struct
import time
import uuid
from dataclasses import dataclass

import portablefile
from asrerrors import DiskImageError

from .image import DiskImage, pwrite_full, zero_fill

SECTOR = 512
FOOTER_COOKIE = b"conectix"
DYNAMIC_COOKIE = b"cxsparse"
DISK_TYPES = {2: "fixed", 3: "dynamic", 4: "differencing"}
UNALLOCATED = 0xFFFFFFFF
# VHD timestamps count seconds from 2000-01-01T00:00:00Z.
VHD_EPOCH = 946684800

_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427s")
_DYN = struct.Struct(">8sQQIIII16sI4s512s192s256s")


def vhd_checksum(data: bytes) -> int:
    return (~sum(data)) & 0xFFFFFFFF


def chs_geometry(size: int) -> tuple[int, int, int]:
    """Cylinders, heads, sectors per track, as the VHD specification computes them."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


@dataclass
class VhdFooter:
    data_offset: int
    current_size: int
    disk_type: int
    creator_app: bytes

    @classmethod
    def parse(cls, raw: bytes, path: str) -> VhdFooter:
        f = _FOOTER.unpack(raw)
        if f[0] != FOOTER_COOKIE:
            raise DiskImageError(f"{path}: VHD footer cookie is {f[0]!r}, not 'conectix'")
        stored = f[14]
        if vhd_checksum(raw[:64] + b"\0\0\0\0" + raw[68:]) != stored:
            raise DiskImageError(f"{path}: VHD footer checksum mismatch (the footer is damaged)")
        if f[13] not in DISK_TYPES:
            raise DiskImageError(f"{path}: unknown VHD disk type {f[13]}")
        return cls(data_offset=f[3], current_size=f[9], disk_type=f[13], creator_app=f[5])


def build_footer(size: int, disk_type: int, data_offset: int) -> bytes:
    cyl, heads, spt = chs_geometry(size)
    fields = [
        FOOTER_COOKIE, 2, 0x00010000, data_offset,
        (int(time.time()) - VHD_EPOCH) & 0xFFFFFFFF,
        # "win " tells readers (qemu included) to trust current_size over CHS geometry,
        # which is what Hyper-V does; the size is then exact.
        b"win ", 0x000A0000, b"Wi2k", size, size, cyl, heads, spt, disk_type, 0,
        uuid.uuid4().bytes, 0, b"\0" * 427,
    ]
    raw = _FOOTER.pack(*fields)
    fields[14] = vhd_checksum(raw)
    return _FOOTER.pack(*fields)


@dataclass
class DynamicHeader:
    table_offset: int
    max_table_entries: int
    block_size: int
    parent_name: str

    @classmethod
    def parse(cls, raw: bytes, path: str) -> DynamicHeader:
        h = _DYN.unpack(raw)
        if h[0] != DYNAMIC_COOKIE:
            raise DiskImageError(f"{path}: VHD dynamic header cookie is {h[0]!r}, not 'cxsparse'")
        if vhd_checksum(raw[:36] + b"\0\0\0\0" + raw[40:]) != h[6]:
            raise DiskImageError(f"{path}: VHD dynamic header checksum mismatch")
        block_size = h[5]
        if block_size == 0 or block_size % SECTOR:
            raise DiskImageError(f"{path}: VHD block size {block_size} is not a sector multiple")
        name = h[10].decode("utf-16-be", errors="replace").rstrip("\0")
        return cls(table_offset=h[2], max_table_entries=h[4], block_size=block_size,
                   parent_name=name)


def read_vhd_meta(fd: int, path: str) -> tuple[VhdFooter, DynamicHeader | None]:
    """The footer (from the end of the file) and, for dynamic disks, the dynamic header."""
    size = os.fstat(fd).st_size
    if size < SECTOR:
        raise DiskImageError(f"{path}: file of {size} bytes is too small for a VHD")
    footer = VhdFooter.parse(portablefile.pread(fd, SECTOR, size - SECTOR), path)
    if footer.disk_type == 2:
        if footer.current_size > size - SECTOR:
            raise DiskImageError(
                f"{path}: fixed VHD is truncated (virtual size {footer.current_size}, "
                f"{size - SECTOR} data bytes in the file)"
            )
        return footer, None
    raw = portablefile.pread(fd, 1024, footer.data_offset)
    if len(raw) != 1024:
        raise DiskImageError(f"{path}: VHD dynamic header at {footer.data_offset} is missing")
    header = DynamicHeader.parse(raw, path)
    blocks = -(-footer.current_size // header.block_size)
    if header.max_table_entries < blocks:
        raise DiskImageError(
            f"{path}: VHD BAT has {header.max_table_entries} entries for {blocks} blocks"
        )
    if header.table_offset + 4 * blocks > size:
        raise DiskImageError(f"{path}: VHD BAT lies beyond the end of the file")
    return footer, header


class FixedVhd(DiskImage):
    format, subformat = "vhd", "fixed"

    def __init__(self, path: str, readonly: bool = False) -> None:
        super().__init__(path, readonly)
        footer, _ = read_vhd_meta(self.fd, self.path)
        self.virtual_size = footer.current_size

    def _read(self, offset: int, length: int) -> bytes:
        return self._pread(offset, length)

    def _readinto(self, offset: int, view: memoryview) -> None:
        self._preadinto(offset, view)

    def _write(self, offset: int, data: bytes) -> None:
        self._pwrite(offset, data)


class DynamicVhd(DiskImage):
    format, subformat = "vhd", "dynamic"

    def __init__(self, path: str, readonly: bool = False) -> None:
        super().__init__(path, readonly)
        footer, header = read_vhd_meta(self.fd, self.path)
        assert header is not None
        if footer.disk_type == 4:
            self.close()
            raise DiskImageError(
                f"{self.path}: differencing VHD images are not supported",
                action="Merge the differencing VHD into its parent, or convert it to VHDX.",
            )
        self.virtual_size = footer.current_size
        self.block_size = header.block_size
        self.table_offset = header.table_offset
        spb = self.block_size // SECTOR
        self.bitmap_size = ((spb + 7) // 8 + SECTOR - 1) // SECTOR * SECTOR

    def _bat(self, block: int) -> int:
        (entry,) = struct.unpack(">I", self._pread(self.table_offset + 4 * block, 4))
        return int(entry)

    def _read(self, offset: int, length: int) -> bytes:
        out = []
        while length:
            block, within = divmod(offset, self.block_size)
            n = min(length, self.block_size - within)
            entry = self._bat(block)
            if entry == UNALLOCATED:
                out.append(bytes(n))
            else:
                out.append(self._pread(entry * SECTOR + self.bitmap_size + within, n))
            offset += n
            length -= n
        return b"".join(out)

    def _readinto(self, offset: int, view: memoryview) -> None:
        pos = 0
        while pos < len(view):
            block, within = divmod(offset + pos, self.block_size)
            n = min(len(view) - pos, self.block_size - within)
            entry = self._bat(block)
            if entry == UNALLOCATED:
                zero_fill(view[pos:pos + n])
            else:
                self._preadinto(entry * SECTOR + self.bitmap_size + within, view[pos:pos + n])
            pos += n

    def _write(self, offset: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            block, within = divmod(offset + pos, self.block_size)
            n = min(len(data) - pos, self.block_size - within)
            chunk = data[pos:pos + n]
            entry = self._bat(block)
            if entry == UNALLOCATED:
                self._allocate(block, within, chunk)
            else:
                self._pwrite(entry * SECTOR + self.bitmap_size + within, chunk)
            pos += n

    def _allocate(self, block: int, within: int, chunk: bytes) -> None:
        end = os.fstat(self.fd).st_size
        footer = self._pread(end - SECTOR, SECTOR)
        start = end - SECTOR  # the new block takes the old footer's place
        content = bytearray(self.block_size)
        content[within:within + len(chunk)] = chunk
        # All sectors are marked present: a dynamic (non-differencing) disk has no parent to
        # fall through to, and qemu writes the same all-ones bitmap.
        total = self.bitmap_size + self.block_size
        self._pwrite(start + total, footer)
        self._pwrite(start, b"\xff" * self.bitmap_size + bytes(content))
        os.fsync(self.fd)
        self._pwrite(self.table_offset + 4 * block, struct.pack(">I", start // SECTOR))


def create_fixed_vhd(path: str, size: int) -> None:
    """Create a fixed VHD of ``size`` bytes (a multiple of 512) that reads as all zeros.

    The data area is a sparse hole, so zero blocks cost no space; write into it with
    :class:`FixedVhd`. The footer is fsynced before returning.
    """
    if size <= 0 or size % SECTOR:
        raise DiskImageError(f"{path}: VHD size {size} must be a positive multiple of 512")
    try:
        fd = portablefile.open_fd(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError as exc:
        raise DiskImageError(f"{os.path.abspath(path)} already exists") from exc
    try:
        os.ftruncate(fd, size)
        pwrite_full(fd, build_footer(size, 2, 0xFFFFFFFFFFFFFFFF), size)
        os.fsync(fd)
    finally:
        os.close(fd)
