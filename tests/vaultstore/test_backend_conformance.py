"""One conformance suite for every storage-account backend, and the fault injector."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from asrerrors import DiskFull, NotFound, StorageError
from cloudsvc.vaultstore import Backend, FaultyBackend, LocalDirBackend


def test_put_get_ranges(backend: Backend) -> None:
    data = bytes(range(256)) * 64
    backend.put("packs/ab/one", data)
    assert backend.get("packs/ab/one") == data
    assert backend.get("packs/ab/one", 10, 20) == data[10:30]
    assert backend.get("packs/ab/one", 16000) == data[16000:]
    assert backend.get("packs/ab/one", len(data) - 5, 100) == data[-5:]
    assert backend.get("packs/ab/one", len(data)) == b""
    assert backend.stat("packs/ab/one").size == len(data)
    assert backend.exists("packs/ab/one")


def test_overwrite_replaces_whole_object(backend: Backend) -> None:
    backend.put("x", b"a" * 1000)
    backend.put("x", b"b" * 10)
    assert backend.get("x") == b"b" * 10


def test_empty_and_large_objects(backend: Backend) -> None:
    backend.put("empty", b"")
    assert backend.get("empty") == b"" and backend.stat("empty").size == 0
    big = os.urandom(5 * 1024 * 1024 + 3)
    backend.put("big", memoryview(big))
    assert backend.get("big", 4 * 1024 * 1024, 1024) == big[4 * 1024 * 1024 : 4 * 1024 * 1024 + 1024]
    assert backend.stat("big").size == len(big) and backend.get("big") == big  # no padding left
    smaller = big[: 2 * 1024 * 1024 - 1]  # a second, shorter write reuses the direct buffer
    backend.put("big2", smaller)
    assert backend.get("big2") == smaller


def test_missing_objects(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.get("packs/zz/none")
    with pytest.raises(NotFound):
        backend.stat("packs/zz/none")
    assert not backend.exists("packs/zz/none")
    backend.delete("packs/zz/none")  # idempotent


def test_list_and_delete(backend: Backend) -> None:
    names = ["packs/aa/1", "packs/aa/2", "packs/bb/3", "other/4", "packsx"]
    for n in names:
        backend.put(n, n.encode())
    assert sorted(backend.list("packs/")) == names[:3]
    assert sorted(backend.list("packs/aa/")) == names[:2]
    assert sorted(backend.list("")) == sorted(names)
    assert sorted(backend.list("pack")) == sorted(names[:3] + ["packsx"])
    backend.delete("packs/aa/1")
    backend.delete("packs/aa/1")
    assert sorted(backend.list("packs/")) == names[1:3]
    assert list(backend.list("nothing/")) == []


def test_invalid_names(backend: Backend) -> None:
    for bad in ("", "/abs", "a/../b", "a//b", ".hidden", "a/b.tmp-x"):
        with pytest.raises(ValueError):
            backend.put(bad, b"x")


def test_faulty_backend_fails_chosen_calls(backend: Backend) -> None:
    faulty = FaultyBackend(backend).fail("put", times=1, skip=1)
    faulty.put("a", b"1")
    with pytest.raises(StorageError, match="injected"):
        faulty.put("b", b"2")
    faulty.put("c", b"3")
    assert not backend.exists("b") and faulty.calls["put"] == 3
    # after=True: the write happens, the caller still sees a failure (a lost acknowledgement).
    faulty.fail("put", after=True)
    with pytest.raises(StorageError):
        faulty.put("d", b"4")
    assert backend.get("d") == b"4"
    faulty.fail("delete", exc=DiskFull("full"))
    with pytest.raises(DiskFull):
        faulty.delete("a")
    assert backend.exists("a")


def test_local_enospc_is_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = LocalDirBackend(tmp_path)

    def no_space(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(DiskFull):
        backend.put("packs/aa/x", b"data")
    monkeypatch.undo()
    # Nothing half-written is left visible, not even the temp file.
    assert list(backend.list("")) == [] and list((tmp_path / "packs" / "aa").iterdir()) == []


def test_local_enospc_in_a_direct_write_is_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = LocalDirBackend(tmp_path)

    def no_space(fd: int, data: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    with pytest.raises(DiskFull):
        backend.put("packs/aa/y", os.urandom(2 * 1024 * 1024))
    monkeypatch.undo()
    assert list(backend.list("")) == [] and list((tmp_path / "packs" / "aa").iterdir()) == []
