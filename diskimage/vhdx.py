"""VHDX images: metadata read with dissect.hypervisor, payload read and written here.

The BAT is an array of little-endian uint64 entries: bits 0-2 the state, bits 20-63 the
file offset in MiB. Payload block ``b`` uses entry ``b + b // chunk_ratio`` (a sector-bitmap
entry follows every ``chunk_ratio`` payload entries). States used here: 0 not present, 2
zero, 3 unmapped, 6 fully present, 7 partially present (differencing disks only).

Writing a block that is not fully present allocates a new block at the end of the file,
aligned to 1 MiB: the whole block (old content zero, plus the new bytes) is written and
fsynced *before* the BAT entry is switched to FULLY_PRESENT, so a crash never leaves an entry
pointing at unwritten data. The BAT is updated in place without the VHDX log, which is only
safe when the log is empty; an image with a non-empty log is refused (replaying it is the job
of Hyper-V or ``qemu-img check -r all``). qemu's "fixed" VHDX leaves its entries in the ZERO
state, so fixed images allocate the same way.

A writer that has its own crash protocol (the replica disks: a marker names the apply in
progress, and an interrupted apply is redone in full into a new file) opens the image with
``sync_allocations=False``: the per-block fsync then buys nothing, and it calls ``flush`` once
at the end. A new image filled from scratch uses :class:`AppendBlocks`: whole payload blocks
appended from one reused aligned buffer (direct I/O where the filesystem has it), data
fsynced once, then every BAT entry written and fsynced.

Differencing VHDX images are read through dissect (with the parent beside them); writes to
them are refused. dissect reads that cross a block boundary return wrong bytes, so every
read is split at ``block_size`` boundaries.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dissect.hypervisor.disk.c_vhdx import (
    ALIGNMENT,
    BAT_REGION_GUID,
    FILE_PARAMETERS_GUID,
    LOGICAL_SECTOR_SIZE_GUID,
    METADATA_REGION_GUID,
    PARENT_LOCATOR_GUID,
    VIRTUAL_DISK_SIZE_GUID,
    c_vhdx,
)
from dissect.hypervisor.disk.vhdx import VHDX, MetadataTable, RegionTable

from asrerrors import DiskImageError

from .image import DiskImage, pwrite_full, zero_fill

MiB = 1 << 20
NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, FULLY_PRESENT, PARTIALLY_PRESENT = 0, 1, 2, 3, 6, 7
SIGNATURE = b"vhdxfile"


@dataclass
class VhdxMeta:
    virtual_size: int
    block_size: int
    chunk_ratio: int
    bat_offset: int
    bat_length: int
    has_parent: bool
    fixed: bool
    log_empty: bool
    parent: str | None


def _parent_path(path: str, locator: Any) -> str | None:
    if locator is None:
        return None
    entries = locator.entries
    rel = entries.get("relative_path")
    if rel:
        return str((Path(path).parent / rel.replace("\\", "/")).resolve())
    absolute = entries.get("absolute_win32_path")
    return absolute.replace("\\", "/") if absolute else None


def read_vhdx_meta(path: str) -> VhdxMeta:
    """Parse headers, region table and metadata with dissect's parsers.

    dissect's ``VHDX`` constructor would also open the parent of a differencing disk, which
    must not be needed to learn the facts of the child, so its parts are used directly.
    """
    try:
        with open(path, "rb") as fh:
            ident = c_vhdx.file_identifier(fh)
            if ident.signature != SIGNATURE:
                raise DiskImageError(f"{path}: VHDX signature is {ident.signature!r}")
            fh.seek(ALIGNMENT)
            h1 = c_vhdx.header(fh)
            fh.seek(2 * ALIGNMENT)
            h2 = c_vhdx.header(fh)
            header = h1 if h1.sequence_number > h2.sequence_number else h2
            if header.signature != b"head":
                raise DiskImageError(f"{path}: VHDX header signature is {header.signature!r}")
            regions = RegionTable(fh, 3 * ALIGNMENT)
            md_region = regions.get(METADATA_REGION_GUID)
            md = MetadataTable(fh, md_region.file_offset, md_region.length)
            fp = md.get(FILE_PARAMETERS_GUID)
            sector = int(md.get(LOGICAL_SECTOR_SIZE_GUID))
            block_size = int(fp.block_size)
            if block_size < MiB or block_size & (block_size - 1):
                raise DiskImageError(f"{path}: VHDX block size {block_size} is invalid")
            bat = regions.get(BAT_REGION_GUID)
            has_parent = bool(fp.has_parent)
            meta = VhdxMeta(
                virtual_size=int(md.get(VIRTUAL_DISK_SIZE_GUID)),
                block_size=block_size,
                chunk_ratio=(2**23 * sector) // block_size,
                bat_offset=int(bat.file_offset),
                bat_length=int(bat.length),
                has_parent=has_parent,
                fixed=bool(fp.leave_block_allocated) and not has_parent,
                log_empty=header.log_guid == b"\0" * 16,
                parent=_parent_path(path, md.get(PARENT_LOCATOR_GUID, required=False))
                if has_parent
                else None,
            )
            size = os.fstat(fh.fileno()).st_size
    except DiskImageError:
        raise
    except Exception as exc:  # dissect raises struct, EOF and its own errors alike
        raise DiskImageError(f"{path}: malformed VHDX ({type(exc).__name__}: {exc})") from exc
    if meta.bat_offset + meta.bat_length > size:
        raise DiskImageError(f"{path}: VHDX BAT region lies beyond the end of the file")
    return meta


class VhdxImage(DiskImage):
    format = "vhdx"

    def __init__(self, path: str, readonly: bool = False, sync_allocations: bool = True) -> None:
        super().__init__(path, readonly)
        self.sync_allocations = sync_allocations
        try:
            meta = read_vhdx_meta(self.path)
        except DiskImageError:
            self.close()
            raise
        if not meta.log_empty:
            self.close()
            raise DiskImageError(
                f"{self.path}: the VHDX log is not empty (the image was not closed cleanly)",
                action="Run 'qemu-img check -r all -f vhdx FILE' or attach it in Hyper-V once "
                "to replay the log, then try again.",
            )
        self.meta = meta
        self.virtual_size = meta.virtual_size
        self.subformat = (
            "differencing" if meta.has_parent else "fixed" if meta.fixed else "dynamic"
        )
        self._diff: Any = None
        if meta.has_parent:
            try:
                self._diff = VHDX(Path(self.path))
            except Exception as exc:
                self.close()
                raise DiskImageError(
                    f"{self.path}: cannot open the parent of this differencing VHDX "
                    f"({meta.parent}): {exc}"
                ) from exc

    def close(self) -> None:
        if getattr(self, "_diff", None) is not None:
            self._diff.fh.close()
            if self._diff.parent is not None:
                self._diff.parent.fh.close()
            self._diff = None
        super().close()

    def _entry_offset(self, block: int) -> int:
        return self.meta.bat_offset + 8 * (block + block // self.meta.chunk_ratio)

    def _entry(self, block: int) -> tuple[int, int]:
        (raw,) = struct.unpack("<Q", self._pread(self._entry_offset(block), 8))
        return raw & 7, (raw >> 20) * MiB

    def _read(self, offset: int, length: int) -> bytes:
        bs = self.meta.block_size
        out = []
        while length:
            block, within = divmod(offset, bs)
            n = min(length, bs - within)
            if self._diff is not None:
                self._diff.seek(offset)
                out.append(self._diff.read(n))
            else:
                state, where = self._entry(block)
                if state == FULLY_PRESENT:
                    out.append(self._pread(where + within, n))
                elif state in (NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED):
                    out.append(bytes(n))
                else:
                    raise DiskImageError(
                        f"{self.path}: block {block} has BAT state {state}, which a VHDX "
                        "without a parent cannot have"
                    )
            offset += n
            length -= n
        return b"".join(out)

    def _readinto(self, offset: int, view: memoryview) -> None:
        if self._diff is not None:
            view[:] = self._read(offset, len(view))
            return
        bs = self.meta.block_size
        pos = 0
        while pos < len(view):
            block, within = divmod(offset + pos, bs)
            n = min(len(view) - pos, bs - within)
            state, where = self._entry(block)
            if state == FULLY_PRESENT:
                self._preadinto(where + within, view[pos:pos + n])
            elif state in (NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED):
                zero_fill(view[pos:pos + n])
            else:
                raise DiskImageError(
                    f"{self.path}: block {block} has BAT state {state}, which a VHDX "
                    "without a parent cannot have"
                )
            pos += n

    def _write(self, offset: int, data: bytes) -> None:
        if self._diff is not None:
            raise DiskImageError(
                f"{self.path}: writes to differencing disks are not supported by the local "
                "hypervisor",
                action="Merge the differencing disk into its parent first.",
            )
        bs = self.meta.block_size
        pos = 0
        while pos < len(data):
            block, within = divmod(offset + pos, bs)
            n = min(len(data) - pos, bs - within)
            chunk = data[pos:pos + n]
            state, where = self._entry(block)
            if state == FULLY_PRESENT:
                self._pwrite(where + within, chunk)
            else:
                self._allocate(block, within, chunk)
            pos += n

    def _allocate(self, block: int, within: int, chunk: bytes) -> None:
        bs = self.meta.block_size
        end = os.fstat(self.fd).st_size
        where = -(-end // MiB) * MiB
        content = bytearray(bs)
        content[within:within + len(chunk)] = chunk
        self._pwrite(where, bytes(content))
        if self.sync_allocations:
            os.fsync(self.fd)
        entry = FULLY_PRESENT | ((where // MiB) << 20)
        self._pwrite(self._entry_offset(block), struct.pack("<Q", entry))


class AppendBlocks:
    """Fill a VHDX none of whose payload blocks is present yet (a new image being made from
    scratch), one whole block at a time: fill all of :attr:`buffer` (``block_size`` bytes,
    reused: it holds an earlier block's bytes), then :meth:`append` it as payload block
    ``block``. Blocks go one after
    another at the end of the file, with ``O_DIRECT`` where the filesystem allows it (fresh
    page-cache pages, not the device, were the limit on our VMs; docs/benchmarks.md),
    buffered otherwise. Two page-aligned buffers are reused: one is written on a thread while
    the caller fills the other. :meth:`finish` fsyncs the data, then writes the BAT entries
    and fsyncs again, so no entry ever points at unwritten data; until then the image reads
    as empty. Nothing here is crash-safe beyond that: the caller writes into a file that no
    one uses until it is complete (a ``.partial``)."""

    def __init__(self, img: VhdxImage) -> None:
        if img.readonly or img.meta.has_parent:
            raise DiskImageError(f"{img.path}: blocks can only be appended to a writable VHDX without a parent")
        self.img = img
        self.block_size = img.meta.block_size
        self._mems = [mmap.mmap(-1, self.block_size) for _ in range(2)]   # page aligned, as O_DIRECT needs
        self._views = [memoryview(m) for m in self._mems]
        self._current = 0
        self._pending: list[Future[None] | None] = [None, None]
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vhdx-append")
        end = os.fstat(img.fd).st_size
        self._next = -(-end // MiB) * MiB
        self._entries: list[tuple[int, int]] = []
        self._direct = -1
        flag = getattr(os, "O_DIRECT", 0)
        if flag:
            try:
                self._direct = os.open(img.path, os.O_WRONLY | flag)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise

    @property
    def buffer(self) -> memoryview:
        """The buffer to fill next (its previous write has completed)."""
        return self._views[self._current]

    def append(self, block: int) -> None:
        """Write :attr:`buffer` as payload block ``block`` (not present until now, and after
        every block appended before)."""
        if not 0 <= block * self.block_size < self.img.virtual_size:
            raise DiskImageError(f"{self.img.path}: block {block} is outside the disk")
        state, _ = self.img._entry(block)
        if state in (FULLY_PRESENT, PARTIALLY_PRESENT) or (self._entries and block <= self._entries[-1][0]):
            raise DiskImageError(f"{self.img.path}: block {block} is already present")
        where = self._next
        self._pending[self._current] = self._pool.submit(self._write, self.buffer, where)
        self._entries.append((block, where))
        self._next += self.block_size
        self._current ^= 1
        self._wait(self._current)

    def _wait(self, i: int) -> None:
        fut, self._pending[i] = self._pending[i], None
        if fut is not None:
            fut.result()   # a failed write raises here, in the caller's thread

    def _write(self, view: memoryview, where: int) -> None:
        if self._direct >= 0:
            try:
                pwrite_full(self._direct, view, where)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                os.close(self._direct)   # direct I/O refused after all: buffered from here on
                self._direct = -1
        pwrite_full(self.img.fd, view, where)

    def finish(self) -> None:
        """Make the blocks durable, then point the BAT at them (and make that durable)."""
        self._wait(0)
        self._wait(1)
        if self._direct >= 0:
            os.fsync(self._direct)
        os.fsync(self.img.fd)
        for block, where in self._entries:
            entry = FULLY_PRESENT | ((where // MiB) << 20)
            self.img._pwrite(self.img._entry_offset(block), struct.pack("<Q", entry))
        os.fsync(self.img.fd)

    def close(self) -> None:
        for fut in self._pending:
            if fut is not None:
                fut.cancel()
        self._pool.shutdown(wait=True)
        if self._direct >= 0:
            os.close(self._direct)
            self._direct = -1
        for v, m in zip(self._views, self._mems, strict=True):
            v.release()
            m.close()
