"""The disk image interface and the raw format.

A :class:`DiskImage` is a virtual disk of ``virtual_size`` bytes that can be read and written
at any byte offset. Implementations keep no cached allocation metadata between calls: the
guest write path and the replication agent may have the same image open in different
processes (serialised by the VM lock), so every call reads the allocation tables it needs
from the file itself.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

import portablefile
from asrerrors import DiskImageError

_ZEROS = memoryview(bytes(1 << 20))


def zero_fill(view: memoryview) -> None:
    """Set every byte of ``view`` to zero."""
    for i in range(0, len(view), len(_ZEROS)):
        n = min(len(_ZEROS), len(view) - i)
        view[i:i + n] = _ZEROS[:n]


def pread_full(fd: int, view: memoryview, offset: int) -> int:
    """Positioned reads into ``view`` until it is full or the file ends; the bytes read."""
    done = 0
    while done < len(view):
        n = portablefile.preadinto(fd, view[done:], offset + done)
        if n <= 0:
            break
        done += n
    return done


def pwrite_full(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (a positioned write may be short)."""
    view = memoryview(data)
    while view:
        n = portablefile.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class DiskImage(ABC):
    """A virtual disk. Reads past the end are refused rather than padded."""

    format: str = ""
    subformat: str = ""

    def __init__(self, path: str, readonly: bool) -> None:
        self.path = os.path.abspath(path)
        self.readonly = readonly
        try:
            self.fd = portablefile.open_fd(self.path, os.O_RDONLY if readonly else os.O_RDWR)
        except FileNotFoundError as exc:
            raise DiskImageError(f"disk image {self.path} does not exist") from exc
        except OSError as exc:
            raise DiskImageError(f"cannot open disk image {self.path}: {exc.strerror}") from exc
        self.virtual_size = 0

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise DiskImageError(
                f"{self.path}: range {offset}+{length} is outside the disk "
                f"(virtual size {self.virtual_size})"
            )

    def _check_writable(self) -> None:
        if self.readonly:
            raise DiskImageError(f"{self.path} was opened read-only")

    def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        return self._read(offset, length)

    def readinto(self, offset: int, buf: bytearray | memoryview) -> None:
        """Fill ``buf`` with the ``len(buf)`` bytes at ``offset``: like :meth:`read`, without
        a fresh allocation per call (callers reuse their buffers)."""
        view = memoryview(buf)
        self._check_range(offset, len(view))
        if view:
            self._readinto(offset, view)

    def write(self, offset: int, data: bytes) -> None:
        self._check_writable()
        self._check_range(offset, len(data))
        if data:
            self._write(offset, bytes(data))

    @abstractmethod
    def _read(self, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def _write(self, offset: int, data: bytes) -> None: ...

    def _readinto(self, offset: int, view: memoryview) -> None:
        view[:] = self._read(offset, len(view))

    def _preadinto(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` from the file; a short file is a truncated image."""
        got = pread_full(self.fd, view, offset)
        if got != len(view):
            raise DiskImageError(
                f"{self.path}: image is truncated (wanted {len(view)} bytes at {offset}, got {got})"
            )

    def _pread(self, offset: int, length: int) -> bytes:
        data = portablefile.pread(self.fd, length, offset)
        if len(data) != length:
            raise DiskImageError(
                f"{self.path}: image is truncated (wanted {length} bytes at {offset}, "
                f"got {len(data)})"
            )
        return data

    def _pwrite(self, offset: int, data: bytes) -> None:
        pwrite_full(self.fd, data, offset)

    def flush(self) -> None:
        """Make every completed write durable (fsync)."""
        if not self.readonly:
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RawImage(DiskImage):
    format = "raw"

    def __init__(self, path: str, readonly: bool = False) -> None:
        super().__init__(path, readonly)
        self.virtual_size = os.fstat(self.fd).st_size

    def _read(self, offset: int, length: int) -> bytes:
        return self._pread(offset, length)

    def _readinto(self, offset: int, view: memoryview) -> None:
        self._preadinto(offset, view)

    def _write(self, offset: int, data: bytes) -> None:
        self._pwrite(offset, data)
