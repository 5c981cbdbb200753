"""Where the local hypervisor keeps things: VM definitions, per-VM state, and the VM lock.

``vm_dir/<name>.json`` holds each definition; ``vm_dir/.state/<name>/`` holds the VM's lock
file, dirty logs and open snapshot. Files are replaced atomically (temp file, fsync, rename,
fsync of the directory) so a crash leaves the old or the new version, never a torn one.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATE_DIR = ".state"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    # rename, then sync the directory: the rename is durable only once the directory is
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


class VmPaths:
    """The files of one VM under ``vm_dir``."""

    def __init__(self, vm_dir: Path, name: str) -> None:
        self.definition = vm_dir / f"{name}.json"
        self.state = vm_dir / STATE_DIR / name
        self.lock = self.state / "lock"
        self.snap = self.state / "snap"  # the open snapshot
        self.snap_tmp = self.state / "snap.tmp"  # a snapshot being taken
        self.snap_dead = self.state / "snap.dead"  # a snapshot being dropped

    def dirty_log(self, disk: int) -> Path:
        return self.state / f"disk{disk}.dirty"


@contextmanager
def vm_lock(paths: VmPaths) -> Iterator[None]:
    """Hold the VM's lock: guest writes, snapshot creation and snapshot reads exclude each other.

    flock on a fresh open file description excludes other processes and other threads of
    this one alike, and the kernel drops it when a holder dies, so a killed writer never
    wedges the VM.
    """
    paths.state.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
