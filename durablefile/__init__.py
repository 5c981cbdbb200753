"""The one durable-write primitive: a file is either its old content or its new content, and
the new content survives a crash once the call returns.

Ordering (restic's "close, then rename; then sync the directory to commit the rename"):

1. write the data to a temporary file in the same directory, created with its final mode
   from the start (``O_EXCL``; a secret is never readable by others, even briefly);
2. ``fsync`` the temporary file: the data is durable before any name points at it;
3. ``rename`` it over the target (atomic on POSIX file systems); or, for a file that must
   not exist yet (``exclusive``), ``link`` it to the target, which fails if the name is
   taken, then remove the temporary name: the target appears whole or not at all, and two
   writers of one new name cannot both succeed;
4. ``fsync`` the directory: the rename (or link) itself is durable.

A failure at any step removes the temporary file and leaves the target untouched. Errors
are the ``OSError`` of the failing step; callers map them to their own ``asrerrors``
(a full disk is ``DiskFull`` wherever the caller is).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

PUBLIC = 0o644
PRIVATE = 0o600


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a new name in ``directory`` durable."""
    if os.name == "nt":
        return  # Windows cannot open a directory; NTFS journals the rename itself
    fd = os.open(os.fspath(directory) or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:
        # Some file systems cannot fsync a directory; the rename is then as durable as the
        # platform makes it.
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: int = PUBLIC, exclusive: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file; when the block ends without an error, its content replaces
    ``path`` durably (see the module doc). Use it for content written in pieces (an export);
    :func:`write_atomic` for content in memory. ``exclusive``: ``path`` must not exist
    (``FileExistsError`` if it does, and nothing is written)."""
    target = os.fspath(path)
    directory = os.path.dirname(target) or "."
    tmp = os.path.join(directory, f".{os.path.basename(target)}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, target)
            os.unlink(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def write_atomic(path: str | os.PathLike[str], data: bytes | bytearray | memoryview, mode: int = PUBLIC,
                 exclusive: bool = False) -> None:
    """Replace ``path`` with ``data`` durably, with file mode ``mode`` (PRIVATE for secrets);
    ``exclusive``: create it, ``FileExistsError`` if it exists."""
    with atomic_writer(path, mode, exclusive) as f:
        f.write(data)


__all__ = ["PRIVATE", "PUBLIC", "atomic_writer", "fsync_dir", "write_atomic"]
