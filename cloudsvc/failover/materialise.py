"""Materialisation: one disk of a recovery point written as a fixed VHD (the format Azure runs).

Contract:

* Streaming. Blocks are read from the vault store in windows of :data:`WINDOW` blocks,
  decoded (decrypted, decompressed, checked against their chunk id) by a small pool of
  threads and written with ``pwrite`` at their offsets; at most :data:`IN_FLIGHT` windows are
  held at once, so memory is independent of the disk's size.
* Sparse. The data area of a new fixed VHD is a hole; zero blocks are never written.
* Never half made under the final name. A disk is written to ``NAME.<random>.partial``,
  fsynced, and only then renamed to ``NAME`` (and the directory fsynced). A crash leaves at
  most ``.partial`` files, which the next attempt deletes and starts over. Each attempt has a
  partial file of its own: an attempt of a cloud service process that stalled while another
  took its job over (issue 15) never writes into, deletes or renames the new attempt's file.
  The last ``progress`` report comes before the rename, so a caller that must stop (its
  job was taken over) leaves nothing under the final name.
* The customer-managed key is checked before any file is created (:func:`check_key`): a wrong
  or missing key is refused with :class:`EncryptionKeyError` and nothing is materialised.
  The key is used in memory only and never stored.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import mmap
import os
import queue
import secrets
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

from asrerrors import DataCorrupt, DiskFull, EncryptionKeyError, StorageError
from chunkfmt import BLOCK_SIZE, ZERO_ID, CustomerKey, decode_chunk, parse_header
from chunkfmt.keys import Keys
from cloudsvc.vaultstore import PointInfo, VaultStore
from diskimage import create_fixed_vhd
from diskimage.image import pwrite_full

WINDOW = 64  # blocks per window: 4 MiB of plaintext
IN_FLIGHT = 4  # windows read ahead of the oldest being written (bounds memory to ~IN_FLIGHT * 2 * 4 MiB)
THREADS = 2
SECTOR = 512

Progress = Callable[[int, int], None]  # (blocks done, blocks total)


@dataclass(frozen=True)
class DiskResult:
    disk_index: int
    path: str
    virtual_size: int
    blocks_written: int
    bytes_written: int


def vhd_size(virtual_size: int) -> int:
    """A fixed VHD holds a whole number of sectors: round up (the tail reads as zeros)."""
    return -(-virtual_size // SECTOR) * SECTOR


def _first_frame(store: VaultStore, point_id: str, disk_index: int) -> tuple[bytes, bytes] | None:
    for _, cid in store.block_map(point_id, disk_index):
        if cid != ZERO_ID:
            got = store.fetch_blobs({cid})[cid]
            if isinstance(got, str):
                raise DataCorrupt(f"point {point_id} disk {disk_index}: chunk {cid.hex()} {got}")
            return cid, got
    return None


def check_key(store: VaultStore, point: PointInfo, vault_id_key: bytes, key: CustomerKey | None) -> Keys:
    """Decide how to decode the point's frames, refusing a missing or wrong key up front.

    One real chunk of every disk is decoded and checked against its id, so a key that merely
    passes the frames' 32-bit key check but is not the VM's key is refused too.
    """
    encrypted: bool | None = None
    samples = []
    for disk in point.disks:
        first = _first_frame(store, point.point_id, disk.disk_index)
        if first is not None:
            samples.append(first)
            encrypted = parse_header(first[1]).encrypted
    if not encrypted:
        # An unencrypted VM (or one whose disks are all zero): a supplied key is not needed.
        keys = Keys(id_key=vault_id_key)
    elif key is None:
        raise EncryptionKeyError(
            f"the VM of point {point.point_id} is encrypted with a customer-managed key and no key was given",
            action="Pass the key file with --encryption-key-file (the cloud never stores the key).",
        )
    else:
        keys = Keys.for_customer_key(key)
    for cid, frame in samples:
        try:
            decode_chunk(frame, keys.aead_key, expected_id=cid, id_key=keys.id_key)
        except (EncryptionKeyError, DataCorrupt) as exc:
            if keys.aead_key is None:
                raise
            raise EncryptionKeyError(
                f"the customer-managed key given (fingerprint {key.fingerprint if key else '?'}) is not the key "
                f"this VM was encrypted with: {exc}",
                causes=("The key file belongs to another provider or was regenerated.",),
                action="Pass the key file of the provider that protects this VM with --encryption-key-file.",
            ) from exc
    return keys


def materialise_disk(
    store: VaultStore, point: PointInfo, disk_index: int, path: str, keys: Keys,
    progress: Progress | None = None, cancelled: threading.Event | None = None,
) -> DiskResult:
    """Write disk ``disk_index`` of ``point`` as a fixed VHD at ``path`` (see module doc).

    Pipeline: the calling thread walks the block map and reads each window's frames (one
    batched index lookup, coalesced ranged reads of the packs); the pool decodes the window
    (zstd, AES-GCM and BLAKE3 release the GIL) into one of the pool's reused aligned buffers
    and writes each run of consecutive blocks with one ``pwrite`` (direct I/O where the
    filesystem has it, see :class:`_Output`).
    """
    disk = point.disks[disk_index]
    size = disk.virtual_size
    partial = f"{path}.{secrets.token_hex(4)}.partial"
    for stale in (path, *glob.glob(glob.escape(path) + ".*partial")):
        _unlink(stale)  # a previous attempt: start over, materialising is idempotent
    try:
        create_fixed_vhd(partial, vhd_size(size))
        out = _Output.open(partial)
    except OSError as exc:
        _unlink(partial)
        raise _storage_error(exc, path) from exc
    total = -(-size // BLOCK_SIZE)
    written = [0, 0]  # blocks, bytes
    lock = threading.Lock()
    buffers: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
    for _ in range(THREADS):
        buffers.put(mmap.mmap(-1, WINDOW * BLOCK_SIZE))  # page aligned, as O_DIRECT needs; reused

    def decode_window(window: list[tuple[int, bytes]], fetched: dict[bytes, bytes | str]) -> None:
        buf = buffers.get()
        try:
            nbytes = _decode_into(buf, window, fetched)
        finally:
            buffers.put(buf)
        with lock:
            written[0] += len(window)
            written[1] += nbytes

    def _decode_into(buf: mmap.mmap, window: list[tuple[int, bytes]], fetched: dict[bytes, bytes | str]) -> int:
        with memoryview(buf) as view:
            runs: list[tuple[int, int, int]] = []  # (first block, buffer start, buffer end)
            pos = 0
            for block, cid in window:
                got = fetched[cid]
                if isinstance(got, str):
                    raise DataCorrupt(
                        f"point {point.point_id} disk {disk_index} block {block}: chunk {cid.hex()} {got}")
                data = decode_chunk(got, keys.aead_key, expected_id=cid, id_key=keys.id_key)
                start = block * BLOCK_SIZE
                if start + len(data) > size:
                    data = data[: size - start]
                view[pos : pos + len(data)] = data
                last = runs[-1] if runs else None
                if last and last[0] + (last[2] - last[1]) // BLOCK_SIZE == block and len(data) == BLOCK_SIZE:
                    runs[-1] = (last[0], last[1], pos + len(data))
                else:
                    runs.append((block, pos, pos + len(data)))
                pos += len(data)
            for first, lo, hi in runs:
                out.write(view, lo, hi, first * BLOCK_SIZE)
            return pos

    try:
        with ThreadPoolExecutor(THREADS, thread_name_prefix="materialise") as pool:
            pending: deque[tuple[Future[None], int]] = deque()

            def drain(limit: int) -> None:
                while len(pending) > limit:
                    fut, last = pending.popleft()
                    fut.result()
                    if progress is not None:
                        progress(last, total)
                    if cancelled is not None and cancelled.is_set():
                        raise DataCorrupt("materialisation was cancelled")

            for window in _windows(store, point.point_id, disk_index):
                fetched = store.fetch_blobs({c for _, c in window})
                pending.append((pool.submit(decode_window, window, fetched), window[-1][0] + 1))
                drain(IN_FLIGHT)
            drain(0)
        out.finish()
    except BaseException as exc:
        out.close()
        _unlink(partial)
        if isinstance(exc, OSError):
            raise _storage_error(exc, path) from exc
        raise
    finally:
        while not buffers.empty():
            buf = buffers.get()
            try:
                buf.close()
            except BufferError:
                pass  # a failed write's traceback still holds a view of it; collected with it
    out.close()
    if progress is not None:
        try:
            progress(total, total)   # the last word before the rename (see module doc)
        except BaseException:
            _unlink(partial)
            raise
    os.replace(partial, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename is durable before the disk is reported as made
    finally:
        os.close(dfd)
    return DiskResult(disk_index, os.path.abspath(path), size, written[0], written[1])


def _unlink(path: str) -> None:
    """Remove ``path`` if it is there (a new attempt may have removed an old one's file)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _storage_error(exc: OSError, path: str) -> StorageError:
    """What a failed write of a recovered disk means to the operator."""
    if exc.errno == errno.ENOSPC:
        return DiskFull(f"no space left to write recovered disk {path}",
                        causes=("The file system of the storage account's directory is full.",),
                        action="Free space there (or use another storage account) and run the failover again; "
                               "nothing was made of this attempt.")
    return StorageError(f"writing recovered disk {path} failed: {exc.strerror or exc}",
                        action="Check the storage account's directory and run the failover again.")


class _Output:
    """The ``.partial`` file being written. Direct I/O (``O_DIRECT``) where the filesystem has
    it: the data goes from our reused aligned buffers straight to the device, so the page
    cache neither fills with a disk-sized file nor pays for fresh pages (costly on virtual
    machines, see docs/benchmarks.md). Where it does not (tmpfs, some network filesystems),
    buffered writes with early writeback. Either way :meth:`finish` fsyncs."""

    def __init__(self, path: str, fd: int, direct: bool) -> None:
        self.path = path
        self.fd = fd
        self.direct = direct
        self._plain: int | None = None  # a buffered descriptor, for writes direct I/O refuses

    @classmethod
    def open(cls, path: str) -> _Output:
        flag = getattr(os, "O_DIRECT", 0)
        if flag:
            try:
                return cls(path, os.open(path, os.O_RDWR | flag), True)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        return cls(path, os.open(path, os.O_RDWR), False)

    def write(self, view: memoryview, lo: int, hi: int, offset: int) -> None:
        """Write ``view[lo:hi]`` at ``offset``. ``lo`` and ``offset`` are block aligned; a
        direct write of a disk's short last block is padded with zeros to a whole sector, which
        stays inside the VHD's data area (its size is rounded up to sectors). A device with
        bigger logical sectors refuses that tail (EINVAL): it is then written buffered."""
        if not self.direct:
            pwrite_full(self.fd, view[lo:hi], offset)
            _start_writeback(self.fd, offset, hi - lo)
            return
        end = hi
        if (end - lo) % SECTOR:
            pad = SECTOR - (end - lo) % SECTOR
            view[end : end + pad] = bytes(pad)
            end += pad
        try:
            pwrite_full(self.fd, view[lo:end], offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            if self._plain is None:
                self._plain = os.open(self.path, os.O_RDWR)
            pwrite_full(self._plain, view[lo:hi], offset)

    def finish(self) -> None:
        if self._plain is not None:
            os.fsync(self._plain)
        os.fsync(self.fd)

    def close(self) -> None:
        if self._plain is not None:
            os.close(self._plain)
        os.close(self.fd)


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(2), which Python's os module lacks; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start (not wait for) writing a range's dirty pages to the device: the disk writes while
    the next windows decode, and dirty memory stays small. Durability still comes from the
    fsync at the end; this is only a hint, so its failure is ignored."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _windows(store: VaultStore, point_id: str, disk_index: int) -> Iterator[list[tuple[int, bytes]]]:
    window: list[tuple[int, bytes]] = []
    for block, cid in store.block_map(point_id, disk_index):
        if cid == ZERO_ID:
            continue  # left sparse
        window.append((block, cid))
        if len(window) >= WINDOW:
            yield window
            window = []
    if window:
        yield window
