"""File operations the agent and the provider need, on POSIX and on Windows alike.

The agent reads and writes disk images, dirty logs and fingerprint files at byte offsets
from several threads, and serialises guest writes and snapshots with a lock file. POSIX has
``os.pread``/``os.pwrite``/``os.preadv`` and ``fcntl.flock``; Windows has none of them.
Everything that must run on a Windows host goes through this module instead:

=====================  ======================================  =============================
call                   POSIX                                   elsewhere (Windows)
=====================  ======================================  =============================
``open_fd``            ``os.open``                             ``os.open`` with ``O_BINARY``
``pread``/``pwrite``   ``os.pread``/``os.pwrite``              seek + read/write, per-fd lock
``preadinto``          ``os.preadv``                           seek + ``readinto``, same lock
``locked``             ``fcntl.flock(LOCK_EX)``                ``msvcrt.locking`` on byte 0
=====================  ======================================  =============================

Why not a library: ``portalocker`` (locking only) chooses its backend by ``os.name``, so its
Windows path cannot run on the Linux machines that test this code; these few lines choose by
what the interpreter has, and the test suite runs them with the POSIX modules taken away
(``tests/foundation/test_windows_portability.py``).

The fallback for positioned I/O moves the descriptor's file position, so every positioned
call on a descriptor holds that descriptor's lock, and nothing else may rely on the
position of a descriptor used here. On Windows a descriptor from plain ``os.open`` is in
text mode (the C runtime's default), which would turn ``\\n`` into ``\\r\\n`` on the way
out: :func:`open_fd` always opens binary.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

BINARY = getattr(os, "O_BINARY", 0)
_POSITIONED = hasattr(os, "pread") and hasattr(os, "pwrite") and hasattr(os, "preadv")
LOCK_POLL_S = (0.001, 0.05)  # msvcrt cannot wait for a lock: poll, backing off to 50 ms

_fd_locks: dict[int, threading.Lock] = {}
_fd_locks_guard = threading.Lock()


def open_fd(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
    """``os.open`` in binary mode everywhere."""
    return os.open(path, flags | BINARY, mode)


def _fd_lock(fd: int) -> threading.Lock:
    with _fd_locks_guard:
        lock = _fd_locks.get(fd)
        if lock is None:
            lock = _fd_locks[fd] = threading.Lock()
        return lock


def pread(fd: int, length: int, offset: int) -> bytes:
    """Up to ``length`` bytes at ``offset`` (fewer at the end of the file)."""
    if _POSITIONED:
        return os.pread(fd, length, offset)
    with _fd_lock(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        while length > 0:
            chunk = os.read(fd, length)
            if not chunk:
                break
            chunks.append(chunk)
            length -= len(chunk)
        return b"".join(chunks)


def preadinto(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` at ``offset``; the bytes read (fewer at the end of the file, and a
    read may be short: callers loop)."""
    if _POSITIONED:
        return os.preadv(fd, [view], offset)
    with _fd_lock(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        with io.FileIO(fd, "rb", closefd=False) as f:
            return f.readinto(view) or 0


def pwrite(fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
    """Write ``data`` at ``offset``; the bytes written (a write may be short: callers loop)."""
    if _POSITIONED:
        return os.pwrite(fd, data, offset)
    with _fd_lock(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


@contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on the file at ``path`` (created if missing) for the block.

    The lock belongs to a fresh open file description, so it excludes other processes and
    other threads of this one alike, and it goes away with a holder that dies: a killed
    writer never wedges the next one. (``flock`` on POSIX; on Windows a byte-range lock on
    byte 0, which conflicts across handles, of one process too.)
    """
    fd = open_fd(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            _lock_windows(fd)
        yield
    finally:
        if fcntl is None:
            # Windows drops a closed handle's locks "when resources allow": unlock first
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]  # Windows only
        os.close(fd)  # POSIX: closing the description releases the flock


def _lock_windows(fd: int) -> None:
    # LK_LOCK gives up after ten one-second tries; a guest write may wait longer than that
    # for a snapshot, so poll with the non-blocking form. msvcrt locks from the file position.
    delay = LOCK_POLL_S[0]
    while True:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]  # Windows only
            return
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, LOCK_POLL_S[1])


__all__ = ["BINARY", "locked", "open_fd", "pread", "preadinto", "pwrite"]
