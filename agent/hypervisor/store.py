"""Where the local hypervisor keeps things: VM definitions, per-VM state, and the VM lock.

``vm_dir/<name>.json`` holds each definition; ``vm_dir/.state/<name>/`` holds the VM's lock
file, dirty logs, open snapshot and fence marker. Files are replaced with
``durablefile.write_atomic`` (temp file, fsync, rename, fsync of the directory), so a crash
leaves the old or the new version, never a torn one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import portablefile
from durablefile import write_atomic

STATE_DIR = ".state"


def atomic_write_json(path: Path, obj: Any, exclusive: bool = False) -> None:
    """``exclusive``: ``path`` must be new (``FileExistsError``); it appears whole."""
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), exclusive=exclusive)


class VmPaths:
    """The files of one VM under ``vm_dir``."""

    def __init__(self, vm_dir: Path, name: str) -> None:
        self.definition = vm_dir / f"{name}.json"
        self.state = vm_dir / STATE_DIR / name
        self.lock = self.state / "lock"
        self.snap = self.state / "snap"  # the open snapshot
        self.snap_tmp = self.state / "snap.tmp"  # a snapshot being taken
        self.snap_dead = self.state / "snap.dead"  # a snapshot being dropped
        self.fence = self.state / "fenced.json"  # present while this copy is fenced (stale)

    def dirty_log(self, disk: int) -> Path:
        return self.state / f"disk{disk}.dirty"


@contextmanager
def vm_lock(paths: VmPaths) -> Iterator[None]:
    """Hold the VM's lock: guest writes, snapshot creation and snapshot reads exclude each other.

    The lock file's lock (``portablefile.locked``) excludes other processes and other
    threads of this one alike, and the system drops it when a holder dies, so a killed
    writer never wedges the VM.
    """
    paths.state.mkdir(parents=True, exist_ok=True)
    with portablefile.locked(paths.lock):
        yield
