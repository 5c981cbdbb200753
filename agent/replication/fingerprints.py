"""Block fingerprints of the last acknowledged point, so a resync reads the disk at disk speed.

Tracking is lost when the agent crashes or its dirty log is reset. The vault's latest point
is then compared with the disk block by block. Doing that with chunk ids means BLAKE3 over
every block (~2.5 GB/s per core here); instead the agent keeps, per disk, the xxh3-128 of
every block as of the last point the cloud acknowledged to it (~12 GB/s per core). A resync
whose base is that point reads each window, fingerprints it, and computes chunk ids only for
the blocks whose fingerprint differs. Without a usable file (another point is the latest,
the disk was resized, the file is missing or was being updated) the cycle falls back to the
vault's block map (``GetBlockMap``), exactly as before.

File layout, per disk: ``STATE_DIR/fingerprints/<vm_id>/disk<N>.fp``::

    offset  size  field
    0       8     magic b"ASRFP001"
    8       8     block count (little-endian)
    16      64    point id (UTF-8, NUL-padded); all NUL while the file is being patched
    128     16*n  xxh3-128 of block i at 128 + 16*i (of the block's bytes; the last may be short)

Write ordering, after the point's acknowledgement (never before: until then the file must
still describe the previous point):

* A cycle that read every block (initial, resync) wrote a whole new file beside the old one
  while it ran, window by window at its offsets (so it cannot go through
  ``durablefile.write_atomic``, which takes the content in memory); it is fsynced, renamed
  over the old file, and the directory fsynced (``durablefile.fsync_dir``), the same order.
* An incremental cycle patches the file in place, only if it describes the cycle's base
  point: header cleared and fsynced, the changed entries written, then the new point id
  written and fsynced. A crash in between leaves a cleared header: not usable, so the next
  resync uses the block map. Anything else in doubt removes the file.

xxh3 is not collision resistant: a guest that crafted two blocks with the same fingerprint
and swapped them while tracking was lost would keep its own replica stale for that block
until the block changes again. It cannot affect any other VM. ``ASR_RESYNC_FINGERPRINTS=0``
turns the file off (every resync then uses chunk ids).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from array import array
from collections.abc import Sequence
from pathlib import Path

import xxhash

import portablefile
from asrops.environment import flag
from durablefile import fsync_dir

log = logging.getLogger(__name__)

MAGIC = b"ASRFP001"
HEADER = 128
FP_SIZE = 16
_POINT_FIELD = 64
_HEAD = struct.Struct("<8sQ64s")


def enabled() -> bool:
    return flag("ASR_RESYNC_FINGERPRINTS")


def fingerprint(block: bytes | memoryview) -> bytes:
    return xxhash.xxh3_128_digest(block)


def _header(nblocks: int, point_id: str) -> bytes:
    raw = point_id.encode()
    if len(raw) > _POINT_FIELD:
        raise ValueError(f"point id {point_id!r} is too long for a fingerprint file")
    return _HEAD.pack(MAGIC, nblocks, raw).ljust(HEADER, b"\0")


# Every write and sync of the files goes through these two names, so a test can inject a
# crash at any one of them (tests/replication/test_fingerprints.py).
_pwrite = portablefile.pwrite
_fsync = os.fsync


class DiskFingerprints:
    """The fingerprint file of one disk of one VM."""

    def __init__(self, directory: Path, disk: int) -> None:
        self.path = directory / f"disk{disk}.fp"
        self._new = directory / f"disk{disk}.fp.new"
        self._fd = -1
        self._lock = threading.Lock()

    # -- reading (resync) ----------------------------------------------------------------------
    def open_for(self, point_id: str, nblocks: int) -> bool:
        """Open the file if it describes ``point_id`` for a disk of ``nblocks`` blocks."""
        self.close()
        if not enabled() or not point_id:
            return False
        try:
            fd = portablefile.open_fd(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        head = portablefile.pread(fd, HEADER, 0)
        ok = (len(head) == HEADER and os.fstat(fd).st_size == HEADER + FP_SIZE * nblocks
              and head == _header(nblocks, point_id))
        if not ok:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def read(self, first: int, count: int) -> bytes:
        """The fingerprints of blocks ``first .. first + count - 1`` (open_for must be True)."""
        data = portablefile.pread(self._fd, FP_SIZE * count, HEADER + FP_SIZE * first)
        if len(data) != FP_SIZE * count:
            raise OSError(f"{self.path} is shorter than its header says")
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- writing (after each acknowledged point) -------------------------------------------------
    def pending(self, nblocks: int, whole: bool) -> PendingFingerprints:
        return PendingFingerprints(self, nblocks, whole)


class PendingFingerprints:
    """The fingerprints a running cycle computed for one disk. ``whole``: the cycle reads
    every block, so they are written to a new file as windows complete (memory stays flat);
    otherwise they are kept (16 + 8 bytes per changed block) and patched in after the ack."""

    def __init__(self, disk: DiskFingerprints, nblocks: int, whole: bool) -> None:
        self.disk = disk
        self.nblocks = nblocks
        self.on = enabled()  # read once: one cycle never half-writes a file
        self.whole = whole and self.on
        self._blocks = array("Q")
        self._fps = bytearray()
        self._fd = -1
        self._written = 0
        if self.whole:
            disk.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = portablefile.open_fd(disk._new, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.ftruncate(self._fd, HEADER + FP_SIZE * nblocks)

    def add(self, blocks: Sequence[int], fps: bytes) -> None:
        """Fingerprints of ``blocks`` (ascending; for a whole file, consecutive windows)."""
        if not blocks or not self.on:
            return
        if self.whole:
            _pwrite(self._fd, fps, HEADER + FP_SIZE * blocks[0])
            self._written += len(blocks)
        else:
            self._blocks.extend(blocks)
            self._fps += fps

    def commit(self, point_id: str, base_point_id: str) -> None:
        """The cloud acknowledged ``point_id``: make the file describe it (see module doc).
        Failures are logged, never raised: the point is safe; at worst a resync is slower."""
        try:
            if self.whole:
                self._commit_whole(point_id)
            elif self.on:
                self._commit_patch(point_id, base_point_id)
        except OSError as exc:
            log.warning("fingerprints of %s not updated (%s); the next resync reads the vault's "
                        "block map instead", self.disk.path, exc)
            self._remove()

    def _commit_whole(self, point_id: str) -> None:
        if self._written != self.nblocks:  # a window was skipped: never publish a partial file
            self._remove()
            return
        _pwrite(self._fd, _header(self.nblocks, point_id), 0)
        _fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.disk._new, self.disk.path)
        fsync_dir(self.disk.path.parent)  # the rename is durable only once the directory is

    def _commit_patch(self, point_id: str, base_point_id: str) -> None:
        path = self.disk.path
        try:
            fd = portablefile.open_fd(path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            head = portablefile.pread(fd, HEADER, 0)
            if head != _header(self.nblocks, base_point_id) or \
                    os.fstat(fd).st_size != HEADER + FP_SIZE * self.nblocks:
                os.close(fd)
                fd = -1
                self._remove()
                return
            _pwrite(fd, _header(self.nblocks, ""), 0)
            _fsync(fd)
            for i, block in enumerate(self._blocks):
                _pwrite(fd, self._fps[i * FP_SIZE:(i + 1) * FP_SIZE], HEADER + FP_SIZE * block)
            _pwrite(fd, _header(self.nblocks, point_id), 0)
            _fsync(fd)
        finally:
            if fd >= 0:
                os.close(fd)

    def discard(self) -> None:
        """The cycle failed: the old file still describes the trusted point; drop the new one."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            try:
                os.unlink(self.disk._new)
            except FileNotFoundError:
                pass

    def _remove(self) -> None:
        self.discard()
        try:
            os.unlink(self.disk.path)
        except FileNotFoundError:
            pass
