"""Consistent snapshots of all disks of a VM, with copy-on-write and dirty-log rotation.

Taking a snapshot, under the VM lock (the only moment guest writes stall):

1. ``snap.tmp/meta.json`` is written (disk count and sizes, owner pid and start time);
2. each disk's dirty log is moved into ``snap.tmp/`` (the captured set) and a fresh, trusted,
   empty log takes its place; an empty copy-on-write map and a sparse COW data file are made;
3. ``snap.tmp`` is renamed to ``snap``: from now on the write path preserves a block's old
   content in ``snap/disk<N>.cow`` (at the block's own offset) before its first overwrite,
   and sets the block's bit in ``snap/disk<N>.cowmap``.

Commit drops ``snap`` (the cloud holds the point: the captured set is forgotten). Abort first
ORs the captured set back into the current log, then drops ``snap``. A ``snap.tmp`` or a
``snap`` whose owner process is gone is stale: recovery merges its captured set back (an
untracked or unreadable capture makes the current log untracked) and drops it, so no dirty
block is ever forgotten without an acknowledgement. Dropping renames to ``snap.dead`` first,
so a crash half way through a removal leaves nothing that looks like a snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import portablefile
from asrclock import Clock
from asrerrors import NotFound, StateConflict
from diskimage import DiskImage
from diskimage.image import pread_full, pwrite_full

from . import tracking
from .store import VmPaths, vm_lock
from .tracking import BLOCK_SIZE


def _process_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    # field 22 (starttime) counts from after the ")" that closes the command name
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(meta: dict[str, Any]) -> bool:
    start = _process_start(int(meta.get("owner_pid", -1)))
    return start is not None and start == meta.get("owner_start")


def _read_meta(directory: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _merge_back(paths: VmPaths, directory: Path) -> None:
    meta = _read_meta(directory)
    if meta is None:
        # Unknown capture: forget nothing, by making every current log untracked.
        for log in paths.state.glob("disk*.dirty"):
            log.unlink()
        return
    for i, size in enumerate(meta["disk_sizes"]):
        captured = tracking.read_log(directory / f"disk{i}.dirty", size)
        tracking.merge_into(captured, paths.dirty_log(i), size)


def _drop(paths: VmPaths, directory: Path) -> None:
    shutil.rmtree(paths.snap_dead, ignore_errors=True)
    os.rename(directory, paths.snap_dead)
    shutil.rmtree(paths.snap_dead)


def recover_stale(paths: VmPaths) -> bool:
    """Clean up after a dead snapshot taker (call under the VM lock).

    Returns True when a live snapshot (owner still running) remains open.
    """
    shutil.rmtree(paths.snap_dead, ignore_errors=True)
    if paths.snap_tmp.exists():
        _merge_back(paths, paths.snap_tmp)
        _drop(paths, paths.snap_tmp)
    if paths.snap.exists():
        meta = _read_meta(paths.snap)
        if meta is not None and _owner_alive(meta):
            return True
        _merge_back(paths, paths.snap)
        _drop(paths, paths.snap)
    return False


def preserve_before_write(paths: VmPaths, disk: int, blocks: range, image: DiskImage) -> None:
    """Copy-on-write: keep the pre-snapshot content of ``blocks`` (call under the VM lock)."""
    cowmap = paths.snap / f"disk{disk}.cowmap"
    try:
        fd = portablefile.open_fd(cowmap, os.O_RDWR)
    except FileNotFoundError:
        return  # no open snapshot
    try:
        size = os.fstat(fd).st_size
        blocks = range(blocks.start, min(blocks.stop, size * 8))
        if not blocks:
            return
        first = blocks.start // 8
        bits = bytearray(portablefile.pread(fd, (blocks.stop - 1) // 8 - first + 1, first))
        with open(paths.snap / f"disk{disk}.cow", "r+b") as cow:
            for b in blocks:
                if bits[b // 8 - first] >> (b % 8) & 1:
                    continue
                start = b * BLOCK_SIZE
                length = min(BLOCK_SIZE, image.virtual_size - start)
                if length <= 0:
                    continue
                cow.seek(start)
                cow.write(image.read(start, length))
                bits[b // 8 - first] |= 1 << (b % 8)
        # data first, then the map bit that says it is there
        pwrite_full(fd, bytes(bits), first)
    finally:
        os.close(fd)


class Snapshot:
    """One open snapshot of a VM: its disks as they were at one instant."""

    def __init__(
        self,
        paths: VmPaths,
        meta: dict[str, Any],
        images: Sequence[DiskImage],
        stall_seconds: float,
    ) -> None:
        self._paths = paths
        self._images = list(images)
        self.id: str = meta["id"]
        self.vm_name: str = meta["vm_name"]
        self.created: float = meta["created"]
        self.app_consistent: bool = meta["app_consistent"]
        self.disk_sizes: list[int] = list(meta["disk_sizes"])
        self.stall_seconds = stall_seconds
        self.closed = False

    @property
    def disk_count(self) -> int:
        return len(self.disk_sizes)

    def disk_size(self, disk: int) -> int:
        self._check_disk(disk)
        return self.disk_sizes[disk]

    def _check_disk(self, disk: int) -> None:
        if not 0 <= disk < len(self.disk_sizes):
            raise NotFound(f"VM {self.vm_name} has no disk {disk} in snapshot {self.id}")

    def _check_open(self) -> None:
        if self.closed:
            raise StateConflict(f"snapshot {self.id} of VM {self.vm_name} is already closed")
        meta = _read_meta(self._paths.snap)
        if meta is None or meta.get("id") != self.id:
            raise StateConflict(
                f"snapshot {self.id} of VM {self.vm_name} is no longer open",
                causes=("It was recovered as stale by another process.",),
                action="Take a new snapshot.",
            )

    def read_block(self, disk: int, block: int) -> bytes:
        """Block ``block`` of ``disk`` as of the snapshot (the last block may be short)."""
        return bytes(self.read_block_list(disk, range(block, block + 1)))

    def read_block_list(
        self, disk: int, blocks: Sequence[int], out: bytearray | memoryview | None = None
    ) -> memoryview:
        """The given blocks of ``disk`` (ascending) as of the snapshot, concatenated: block
        ``blocks[i]`` is at ``i * BLOCK_SIZE`` (only the disk's last block may be short).

        The VM lock is held once for the whole list and the COW map is read once for its
        span; consecutive blocks not preserved in the COW store are read from the image in
        one call. ``out`` (at least as large as the result) is filled instead of allocating.
        """
        self._check_disk(disk)
        size = self.disk_sizes[disk]
        nblocks = tracking.block_count(size)
        if not blocks:
            return memoryview(b"")
        for b in (blocks[0], blocks[-1]):
            if not 0 <= b < nblocks:
                raise NotFound(f"block {b} is outside disk {disk} ({size} bytes)")
        total = len(blocks) * BLOCK_SIZE
        if blocks[-1] == nblocks - 1:
            total -= nblocks * BLOCK_SIZE - size
        if out is None:
            view = memoryview(bytearray(total))
        else:
            view = memoryview(out)[:total]
            if len(view) != total:
                raise ValueError(f"buffer of {len(view)} bytes is smaller than {total}")
        contiguous = isinstance(blocks, range) and blocks.step == 1
        if not contiguous and any(y <= x for x, y in zip(blocks, blocks[1:], strict=False)):
            raise ValueError("blocks must be ascending without repeats")
        image = self._images[disk]
        with vm_lock(self._paths):
            # under the lock, so a racing guest write cannot land between the map check and
            # the read (it would move the old data to the COW store after we chose the disk)
            self._check_open()
            lo = blocks[0] // 8
            fd = portablefile.open_fd(self._paths.snap / f"disk{disk}.cowmap", os.O_RDONLY)
            try:
                bits = portablefile.pread(fd, blocks[-1] // 8 - lo + 1, lo)
            finally:
                os.close(fd)
            # segments [first block, count, position in the list, preserved in the COW store]
            segs: list[list[Any]]
            if contiguous and bits.count(0) == len(bits):
                segs = [[blocks[0], len(blocks), 0, False]]
            else:
                segs = []
                for i, b in enumerate(blocks):
                    byte = b // 8 - lo
                    cow = byte < len(bits) and bool(bits[byte] >> (b % 8) & 1)
                    last = segs[-1] if segs else None
                    if last is not None and last[0] + last[1] == b and last[3] == cow:
                        last[1] += 1
                    else:
                        segs.append([b, 1, i, cow])
            cow_fd = -1
            try:
                for start, n, pos, cow in segs:
                    at = pos * BLOCK_SIZE
                    length = min(n * BLOCK_SIZE, size - start * BLOCK_SIZE)
                    part = view[at:at + length]
                    if not cow:
                        image.readinto(start * BLOCK_SIZE, part)
                        continue
                    if cow_fd < 0:
                        cow_fd = portablefile.open_fd(self._paths.snap / f"disk{disk}.cow", os.O_RDONLY)
                    if pread_full(cow_fd, part, start * BLOCK_SIZE) != len(part):
                        raise StateConflict("a snapshot's copy-on-write store is shorter than its disk")
            finally:
                if cow_fd >= 0:
                    os.close(cow_fd)
        return view

    def dirty_blocks(self, disk: int) -> list[int] | None:
        """Blocks written since the previous acknowledged snapshot, or None when tracking
        cannot be trusted for this disk (resynchronise by hash comparison)."""
        self._check_disk(disk)
        bits = tracking.read_log(self._paths.snap / f"disk{disk}.dirty", self.disk_sizes[disk])
        return None if bits is None else tracking.bits_to_list(bits)

    def commit(self) -> None:
        """The point is durable in the cloud: forget the captured dirty set, drop the COW."""
        with vm_lock(self._paths):
            self._check_open()
            _drop(self._paths, self._paths.snap)
        self._close()

    def abort(self) -> None:
        """The point was not acknowledged: the captured dirty set goes back to the VM."""
        with vm_lock(self._paths):
            self._check_open()
            _merge_back(self._paths, self._paths.snap)
            _drop(self._paths, self._paths.snap)
        self._close()

    def _close(self) -> None:
        self.closed = True
        for image in self._images:
            image.close()


def take_snapshot(
    paths: VmPaths,
    vm_name: str,
    images: Sequence[DiskImage],
    clock: Clock,
    app_consistent: bool,
) -> Snapshot:
    with vm_lock(paths):
        # the stall is a real-time measurement, not a schedule: the injected clock is not used
        t0 = time.monotonic()
        if recover_stale(paths):
            existing = _read_meta(paths.snap) or {}
            raise StateConflict(
                f"VM {vm_name} already has an open snapshot ({existing.get('id')}, "
                f"process {existing.get('owner_pid')})",
                action="Commit or abort the open snapshot first.",
            )
        pid = os.getpid()
        meta: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "vm_name": vm_name,
            "created": clock.now(),
            "app_consistent": app_consistent,
            "disk_sizes": [img.virtual_size for img in images],
            "owner_pid": pid,
            "owner_start": _process_start(pid),
        }
        paths.snap_tmp.mkdir()
        (paths.snap_tmp / "meta.json").write_text(json.dumps(meta))
        for i, img in enumerate(images):
            log = paths.dirty_log(i)
            if log.exists():
                os.rename(log, paths.snap_tmp / f"disk{i}.dirty")
            tracking.write_log(log, img.virtual_size)
            (paths.snap_tmp / f"disk{i}.cowmap").write_bytes(
                bytes((tracking.block_count(img.virtual_size) + 7) // 8)
            )
            with open(paths.snap_tmp / f"disk{i}.cow", "wb") as fh:
                fh.truncate(img.virtual_size)  # sparse: only preserved blocks take space
        os.rename(paths.snap_tmp, paths.snap)
        stall = time.monotonic() - t0
    return Snapshot(paths, meta, images, stall)
