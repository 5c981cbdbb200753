"""durablefile, the one durable-write primitive: old content or new content, never a mix, a
secret never readable by others, nothing left behind by a failure, and the rename made durable.

Callers (key files, identities, credentials, the customer key) are checked here too: each must
reach the directory fsync that the old ``certs.pki.write_private`` skipped.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import durablefile
from durablefile import PRIVATE, PUBLIC, atomic_writer, write_atomic


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 0: the mode a file gets is exactly the one it was created with."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def leftovers(d: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name not in keep)


def test_content_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"old content")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    with atomic_writer(target) as f:
        f.write(b"in ")
        f.write(b"pieces")
    assert target.read_bytes() == b"in pieces"
    assert leftovers(tmp_path, {"f"}) == []


def test_exclusive_creates_whole_or_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``exclusive``: the name appears with its whole content (a link of the durable
    temporary file) or, if taken, ``FileExistsError`` with the old content untouched; the
    directory is synced after the link; no temporary name is left either way."""
    target = tmp_path / "vm.json"
    synced: list[str] = []
    real_fsync_dir = durablefile.fsync_dir

    def fsync_dir(d: str) -> None:
        synced.append(os.fspath(d))
        real_fsync_dir(d)

    monkeypatch.setattr(durablefile, "fsync_dir", fsync_dir)
    write_atomic(target, b'{"v": 1}', exclusive=True)
    assert target.read_bytes() == b'{"v": 1}' and synced == [str(tmp_path)]
    with pytest.raises(FileExistsError):
        write_atomic(target, b'{"v": 2}', exclusive=True)
    assert target.read_bytes() == b'{"v": 1}'
    assert leftovers(tmp_path, {"vm.json"}) == []


@pytest.mark.parametrize("mode", [PRIVATE, PUBLIC])
def test_mode_is_set_at_creation(tmp_path: Path, open_umask: None, mode: int) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"old")
    os.chmod(target, 0o644)
    seen: dict[str, int] = {}
    with atomic_writer(target, mode) as f:
        # the temporary file, before any data and before any rename: already its final mode
        seen["tmp"] = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        seen["old"] = stat.S_IMODE(target.stat().st_mode)
        f.write(b"s3cret")
    assert seen == {"tmp": mode, "old": 0o644}
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert target.read_bytes() == b"s3cret"


def test_private_file_is_created_exclusively_with_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mode goes into os.open itself (no chmod afterwards), with O_EXCL: a file planted at
    the temporary name is never reused."""
    calls: list[tuple[str, int, int]] = []
    real_open = os.open

    def recording_open(path: Any, flags: int, mode: int = 0o777, *a: Any, **kw: Any) -> int:
        calls.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, *a, **kw)

    monkeypatch.setattr(durablefile.os, "open", recording_open)
    monkeypatch.setattr(durablefile.os, "chmod", lambda *a, **kw: pytest.fail("chmod after creation"))
    write_atomic(tmp_path / "k", b"x", PRIVATE)
    created = [c for c in calls if c[1] & os.O_CREAT]
    assert len(created) == 1
    path, flags, mode = created[0]
    assert Path(path).parent == tmp_path and Path(path).name != "k"
    assert flags & os.O_EXCL and mode == 0o600


def _fail_in(monkeypatch: pytest.MonkeyPatch, name: str, exc: OSError) -> None:
    def boom(*a: Any, **kw: Any) -> Any:
        raise exc
    monkeypatch.setattr(durablefile.os, name, boom)


@pytest.mark.parametrize("failure", ["fsync", "replace", "in-block"])
def test_failure_leaves_target_untouched_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     failure: str) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"old", PRIVATE)
    if failure == "in-block":
        with pytest.raises(RuntimeError), atomic_writer(target, PRIVATE) as f:
            f.write(b"half of the new")
            raise RuntimeError("the producer failed")
    else:
        _fail_in(monkeypatch, failure, OSError(errno.EIO, "injected"))
        with pytest.raises(OSError) as info:
            write_atomic(target, b"new", PRIVATE)
        assert info.value.errno == errno.EIO
        monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path, {"f"}) == []


def test_target_is_a_directory_or_parent_missing(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "d", b"x")
    assert leftovers(tmp_path, {"d"}) == [] and list((tmp_path / "d").iterdir()) == []
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "f", b"x")


def record_syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every os.fsync and os.replace, in order: ("file"|"dir", path-ish)."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else str(fd)
        events.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", target))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_the_rename_is_made_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = record_syncs(monkeypatch)
    write_atomic(tmp_path / "f", b"x", PRIVATE)
    kinds = [e[0] for e in events]
    assert kinds == ["file", "replace", "dir"], events
    assert events[2][1] == str(tmp_path)


def _keyfile_write(d: Path) -> Path:
    from certs import keyfile

    key = keyfile.RegistrationKey(
        vault_id="v1", vault_name="v", region="japaneast",
        endpoints={"api": "127.0.0.1:1", "registration": "127.0.0.1:2"},
        service_ca_pem="ca", vault_ca_pem="vca", secret="s", issued_at=1.0, expires_at=2.0)
    keyfile.write(str(d / "k.key"), key)
    return d / "k.key"


def _identity_save(d: Path) -> Path:
    from registration.state import SiteIdentity

    ident = SiteIdentity(state_dir=str(d), vault_id="v1", vault_name="v", role="agent", name="hv01",
                         identity="spiffe://asr/vault/v1/agent/hv01", endpoints={}, registered_at=1.0)
    ident.save(b"ca", b"cert", b"key")
    return d / "identity.key"


def _customer_key(d: Path) -> Path:
    from chunkfmt import CustomerKey

    CustomerKey.generate().save(d / "customer.key")
    return d / "customer.key"


def _status(d: Path) -> Path:
    from registration.state import write_status

    write_status(str(d), {"cloud": {"state": "Connected"}})
    return d / "status.json"


@pytest.mark.parametrize("writer", [_keyfile_write, _identity_save, _customer_key, _status],
                         ids=["keyfile", "identity", "customer-key", "status"])
def test_callers_write_durably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_umask: None,
                               writer: Callable[[Path], Path]) -> None:
    """Each file is fsynced, renamed, then its directory fsynced; secrets are 0600."""
    events = record_syncs(monkeypatch)
    path = writer(tmp_path)
    renamed = [i for i, e in enumerate(events) if e == ("replace", str(path))]
    assert renamed, events
    after = events[renamed[-1] + 1:]
    assert after and after[0] == ("dir", str(tmp_path)), events
    assert events[renamed[-1] - 1][0] == "file", events
    if path.name.endswith(".key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert leftovers(tmp_path, {p.name for p in tmp_path.iterdir() if ".tmp" not in p.name}) == []
