"""``portablefile``: positioned I/O and the lock file, on the POSIX calls and on the paths a
Windows host takes (selected here by taking the POSIX calls away from the module)."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import portablefile
from tests.foundation import without_posix

BLOCK = 4096


@pytest.fixture(params=["posix", "windows"])
def platform(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "windows":
        monkeypatch.setattr(portablefile, "_POSITIONED", False)
        monkeypatch.setattr(portablefile, "fcntl", None)
        monkeypatch.setattr(portablefile, "msvcrt", without_posix._msvcrt(), raising=False)
    yield str(request.param)


def test_positioned_io_from_many_threads_on_one_descriptor(platform: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = portablefile.open_fd(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        blocks = 64

        def write(i: int) -> None:
            data = bytes([i]) * BLOCK
            done = 0
            while done < BLOCK:
                done += portablefile.pwrite(fd, data[done:], i * BLOCK + done)

        def read(i: int) -> bool:
            buf = bytearray(BLOCK)
            n = portablefile.preadinto(fd, memoryview(buf), i * BLOCK)
            return n == BLOCK and buf == bytes([i]) * BLOCK and portablefile.pread(fd, BLOCK, i * BLOCK) == buf

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, reversed(range(blocks))))
            assert all(pool.map(read, range(blocks)))
        assert portablefile.pread(fd, 10, blocks * BLOCK - 5) == bytes([blocks - 1]) * 5  # short at the end
        assert path.read_bytes() == b"".join(bytes([i]) * BLOCK for i in range(blocks))
    finally:
        os.close(fd)


def _free(lock: Path) -> bool:
    """Whether another open file of this process could take the lock now."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_the_lock_is_exclusive_while_held(platform: str, tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with portablefile.locked(lock):
        assert not _free(lock)
    assert _free(lock)


def test_a_waiter_on_windows_polls_until_the_holder_leaves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    msvcrt = without_posix._msvcrt()
    refused = threading.Semaphore(0)
    real_locking = msvcrt.locking

    def locking(fd: int, mode: int, nbytes: int) -> None:
        try:
            real_locking(fd, mode, nbytes)
        except PermissionError:
            refused.release()
            raise

    msvcrt.locking = locking  # type: ignore[attr-defined]
    monkeypatch.setattr(portablefile, "fcntl", None)
    monkeypatch.setattr(portablefile, "msvcrt", msvcrt, raising=False)
    lock = tmp_path / "lock"
    order: list[str] = []

    def waiter() -> None:
        with portablefile.locked(lock):
            order.append("waiter in")

    with portablefile.locked(lock):
        t = threading.Thread(target=waiter)
        t.start()
        assert refused.acquire(timeout=30) and refused.acquire(timeout=30)  # it tried, and again
        order.append("holder out")
    t.join(30)
    assert order == ["holder out", "waiter in"]
