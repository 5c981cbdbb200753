"""The storage-account interface and its local-directory implementation.

A backend stores named immutable objects ("packs/ab/abcd..."). The contract, which the
conformance suite in ``tests/vaultstore`` checks for every implementation:

* ``put(name, data)`` is atomic and durable when it returns: a reader sees the whole object or
  nothing, and a crash after the return cannot lose it. Putting an existing name replaces it
  (the store only ever re-puts identical, content-addressed bytes). ``data`` may be a view
  of a buffer the caller reuses once ``put`` returns: never keep a reference to it.
* ``get(name, offset=0, length=None)`` returns ``length`` bytes from ``offset`` (to the end
  when ``length`` is None; fewer only at the end of the object); NotFound if absent.
* ``list(prefix)`` yields every name starting with ``prefix``, in no particular order.
* ``delete(name)`` is idempotent: deleting an absent name is not an error, so an interrupted
  garbage collection can simply be run again.
* ``stat(name)`` returns the size, NotFound if absent; ``exists(name)``.
* Failures raise :class:`StorageError` (``DiskFull`` when out of space), never a raw OSError.

Names are relative, ``/``-separated, made of ``[A-Za-z0-9._-]`` segments.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from asrerrors import NotFound, StorageError, storage_error

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
# Temp files live beside their target and carry this marker; list() hides them.
_TMP_MARK = ".tmp-"


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int


@runtime_checkable
class Backend(Protocol):
    def put(self, name: str, data: bytes | memoryview) -> None: ...

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def list(self, prefix: str = "") -> Iterator[str]: ...

    def delete(self, name: str) -> None: ...

    def stat(self, name: str) -> ObjectInfo: ...

    def exists(self, name: str) -> bool: ...


def check_name(name: str) -> str:
    parts = name.split("/")
    if not name or any(not _SEGMENT.match(p) or _TMP_MARK in p for p in parts):
        raise ValueError(f"invalid object name {name!r}")
    return name


def _check_range(offset: int, length: int | None) -> None:
    if offset < 0 or (length is not None and length < 0):
        raise ValueError("offset and length must not be negative")


class LocalDirBackend:
    """Objects as files under ``root``: the embedded default storage account."""

    def __init__(self, root: str | os.PathLike[str], direct_io: bool = True) -> None:
        self.root = Path(root)
        self._direct = _DirectWriter() if direct_io and hasattr(os, "O_DIRECT") else None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, f"cannot create storage directory {self.root}") from exc

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def put(self, name: str, data: bytes | memoryview) -> None:
        path = self._path(name)
        tmp = path.with_name(f"{path.name}{_TMP_MARK}{secrets.token_hex(6)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if self._direct is None or not self._direct.write(tmp, data):
                _write_buffered(tmp, data)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                # The data must be on disk before the rename makes it visible, or a crash
                # could leave a complete-looking name over a hole.
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            # Now sync the directory to commit the rename itself.
            self._fsync_dir(path.parent)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise _os_error(exc, f"cannot write {name}") from exc

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        _check_range(offset, length)
        try:
            with open(self._path(name), "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError as exc:
            raise NotFound(f"object {name} does not exist in the storage account") from exc
        except OSError as exc:
            raise _os_error(exc, f"cannot read {name}") from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        # Walk only the deepest directory the prefix names, not the whole account.
        head, _, _ = prefix.rpartition("/")
        start = self.root / head if head else self.root
        if not start.is_dir():
            return
        for dirpath, _dirs, files in os.walk(start):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for fname in files:
                if _TMP_MARK in fname:
                    continue
                name = fname if rel == "." else f"{rel}/{fname}"
                if name.startswith(prefix):
                    yield name

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
            self._fsync_dir(path.parent)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _os_error(exc, f"cannot delete {name}") from exc

    def stat(self, name: str) -> ObjectInfo:
        try:
            st = self._path(name).stat()
        except FileNotFoundError as exc:
            raise NotFound(f"object {name} does not exist in the storage account") from exc
        except OSError as exc:
            raise _os_error(exc, f"cannot stat {name}") from exc
        return ObjectInfo(name, st.st_size)

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def remove_tree(self, prefix: str) -> None:
        """Remove the directory ``prefix`` names with whatever is left in it (temp files of
        interrupted puts, empty directories) once its objects are deleted: a store's
        teardown. Absent is not an error."""
        path = self._path(prefix.rstrip("/"))
        try:
            shutil.rmtree(path)
            self._fsync_dir(path.parent)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _os_error(exc, f"cannot remove {prefix}") from exc

    def __repr__(self) -> str:
        return f"LocalDirBackend({str(self.root)!r})"


def _write_buffered(path: Path, data: bytes | memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class _DirectWriter:
    """Writes big objects with ``O_DIRECT`` from one reused page-aligned buffer.

    Why: packs are written once and rarely read soon after. Through the page cache every
    pack needs fresh cache pages, and on virtual machines first-touching a page costs ~4 µs
    (16 MiB: ~60 ms of CPU on the sealing thread, measured); direct I/O from a warm buffer
    costs the copy into it (~3 ms) and the device write. The object is written padded to
    whole 4 KiB pages and then truncated to its length. Small objects, and filesystems
    that refuse ``O_DIRECT`` (the first refusal turns it off), use buffered writes."""

    MIN_SIZE = 1024 * 1024
    ALIGN = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf: mmap.mmap | None = None
        self.enabled = True

    def write(self, path: Path, data: bytes | memoryview) -> bool:
        """Write ``data`` to the new file ``path``; False (nothing written) when direct I/O
        does not apply, so the caller writes it buffered."""
        n = len(data)
        if not self.enabled or n < self.MIN_SIZE:
            return False
        padded = -(-n // self.ALIGN) * self.ALIGN
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.enabled = False  # this filesystem has no direct I/O
            return False
        try:
            with self._lock:
                if self._buf is None or len(self._buf) < padded:
                    if self._buf is not None:
                        self._buf.close()
                    self._buf = mmap.mmap(-1, padded)
                buf = self._buf
                buf[:n] = data
                buf[n:padded] = bytes(padded - n)
                with memoryview(buf) as view:
                    done = 0
                    while done < padded:
                        done += os.pwrite(fd, view[done:padded], done)
            os.ftruncate(fd, n)
        finally:
            os.close(fd)
        return True


def _os_error(exc: OSError, what: str) -> StorageError:
    return storage_error(exc, what, "the storage account's file system")


class CheckedBackend:
    """Holds any backend to the contract's error rule: an ``OSError`` that escapes it (a
    third-party backend, a fault injected in tests, a bug) becomes ``StorageError``, and
    ENOSPC/EDQUOT ``DiskFull``, so that a full disk reaches the caller as ASR-0061 wherever
    it happens, also on the store's sealing thread. ``inner`` is the wrapped backend."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    def put(self, name: str, data: bytes | memoryview) -> None:
        try:
            self.inner.put(name, data)
        except OSError as exc:
            raise _os_error(exc, f"cannot write {name}") from exc

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            return self.inner.get(name, offset, length)
        except OSError as exc:
            raise _os_error(exc, f"cannot read {name}") from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        try:
            yield from self.inner.list(prefix)
        except OSError as exc:
            raise _os_error(exc, f"cannot list {prefix!r}") from exc

    def delete(self, name: str) -> None:
        try:
            self.inner.delete(name)
        except OSError as exc:
            raise _os_error(exc, f"cannot delete {name}") from exc

    def stat(self, name: str) -> ObjectInfo:
        try:
            return self.inner.stat(name)
        except OSError as exc:
            raise _os_error(exc, f"cannot stat {name}") from exc

    def exists(self, name: str) -> bool:
        try:
            return self.inner.exists(name)
        except OSError as exc:
            raise _os_error(exc, f"cannot stat {name}") from exc

    def __repr__(self) -> str:
        return f"CheckedBackend({self.inner!r})"
