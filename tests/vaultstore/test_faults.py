"""The fault injector itself: errors instead of or after a call, repeats and skips, a pause that a
test waits for and releases, counts; and the same faults from an ``ASR_FAULTS`` spec file,
across a process boundary."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from asrclock import FakeClock
from asrerrors import DiskFull, InvalidConfig, StorageError
from cloudsvc.vaultstore import FaultyBackend, LocalDirBackend, faults_from_environment
from tests.vaultstore.diskdata import make_store

REPO = Path(__file__).resolve().parents[2]


def test_error_instead_repeats_after_skipping(tmp_path: Path) -> None:
    faulty = FaultyBackend(LocalDirBackend(tmp_path))
    fault = faulty.add_fault("put").error_instead(OSError(errno.EIO, "I/O error")).skip(1).repeat(2)
    faulty.put("a", b"1")
    for name in ("b", "c"):
        with pytest.raises(OSError, match="I/O error"):
            faulty.put(name, b"2")
    faulty.put("d", b"3")
    assert fault.count == 2 and fault.fired.is_set() and fault.exhausted
    assert faulty.calls["put"] == 4
    assert sorted(faulty.inner.list("")) == ["a", "d"]


def test_error_after_the_call_took_effect_and_prefixes(tmp_path: Path) -> None:
    faulty = FaultyBackend(LocalDirBackend(tmp_path))
    fault = faulty.add_fault("put", prefix="packs/").error_after()
    faulty.put("other/x", b"not matched")
    with pytest.raises(StorageError, match="injected put failure"):
        faulty.put("packs/aa/y", b"written")
    assert faulty.inner.get("packs/aa/y") == b"written" and fault.count == 1


def test_a_paused_call_waits_until_released(tmp_path: Path) -> None:
    faulty = FaultyBackend(LocalDirBackend(tmp_path))
    faulty.put("x", b"data")
    gate = faulty.add_fault("get").skip(1).pause(timeout_s=60)
    assert faulty.get("x") == b"data"  # skipped
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(faulty.get("x")))
    reader.start()
    assert gate.wait_fired(60)
    assert reader.is_alive() and got == []  # held inside the backend
    assert faulty.get("x") == b"data"  # the fault acted once: other calls pass
    gate.release()
    reader.join(60)
    assert got == [b"data"] and gate.count == 1 and faulty.calls["get"] == 3


def test_an_unreleased_pause_fails_the_call_at_its_deadline(tmp_path: Path) -> None:
    faulty = FaultyBackend(LocalDirBackend(tmp_path))
    faulty.add_fault("stat").pause(timeout_s=0.05)
    with pytest.raises(StorageError, match="not released"):
        faulty.stat("x")


def test_clear_releases_paused_calls(tmp_path: Path) -> None:
    faulty = FaultyBackend(LocalDirBackend(tmp_path))
    gate = faulty.add_fault("exists").pause(timeout_s=60)
    seen: list[bool] = []
    caller = threading.Thread(target=lambda: seen.append(faulty.exists("x")))
    caller.start()
    assert gate.wait_fired(60)
    faulty.clear()
    caller.join(60)
    assert seen == [False]


def _spec(tmp_path: Path, faults: list[dict[str, object]]) -> dict[str, str]:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps(faults))
    return {"ASR_FAULTS": str(path), "ASR_TEST_MODE": "1"}


def test_no_spec_leaves_the_backend_alone(tmp_path: Path) -> None:
    backend = LocalDirBackend(tmp_path)
    assert faults_from_environment(backend, {}) is backend
    assert faults_from_environment(backend, {"ASR_FAULTS": ""}) is backend


def test_a_spec_is_ignored_outside_test_mode(tmp_path: Path) -> None:
    """ASR_FAULTS is a test hook: without ASR_TEST_MODE=1 nothing is injected (and the cloud
    service refuses to start with it set: tests/foundation/test_environment.py)."""
    spec = _spec(tmp_path, [{"method": "put", "action": "error", "errno": 28}])
    backend = LocalDirBackend(tmp_path)
    assert faults_from_environment(backend, {"ASR_FAULTS": spec["ASR_FAULTS"]}) is backend
    assert faults_from_environment(backend, {**spec, "ASR_TEST_MODE": "0"}) is backend
    assert isinstance(faults_from_environment(backend, spec), FaultyBackend)


def test_a_spec_errno_28_put_is_disk_full_through_the_store(tmp_path: Path) -> None:
    backend = faults_from_environment(LocalDirBackend(tmp_path / "a"), _spec(tmp_path, [
        {"method": "put", "action": "error", "errno": 28, "times": 2},
    ]))
    assert isinstance(backend, FaultyBackend)
    with pytest.raises(OSError) as raw:  # the fault raises what a leaky backend would
        backend.put("x", b"1")
    assert raw.value.errno == errno.ENOSPC
    store = make_store(backend, tmp_path / "idx.db", FakeClock())  # the store maps it
    with pytest.raises(DiskFull):
        store.backend.put("packs/aa/x", b"2")
    store.close()


@pytest.mark.parametrize("bad", [
    {"method": "rename"}, {"method": "get", "action": "explode"}, {"method": "get", "when": 1},
    {"method": "get", "times": 0}, "get",
])
def test_a_bad_spec_is_refused_by_name(tmp_path: Path, bad: object) -> None:
    env = _spec(tmp_path, [bad])  # type: ignore[list-item]
    with pytest.raises(InvalidConfig, match="faults.json"):
        faults_from_environment(LocalDirBackend(tmp_path / "a"), env)


def test_a_pause_across_processes(tmp_path: Path) -> None:
    """A subprocess (as the cloud service would) wraps its backend from ASR_FAULTS; its 3rd
    get pauses, creates the fired file, and continues once the release file exists."""
    account = LocalDirBackend(tmp_path / "a")
    account.put("obj", b"payload")
    fired, release, done = tmp_path / "fired", tmp_path / "release", tmp_path / "done"
    env = {**os.environ, "PYTHONPATH": str(REPO), **_spec(tmp_path, [
        {"method": "get", "action": "pause", "after": 2, "fired_file": str(fired), "release_file": str(release),
         "timeout": 60},
    ])}
    script = (
        "import sys\n"
        "from cloudsvc.vaultstore import LocalDirBackend, faults_from_environment\n"
        "b = faults_from_environment(LocalDirBackend(sys.argv[1]))\n"
        "got = [b.get('obj') for _ in range(4)]\n"
        "open(sys.argv[2], 'wb').write(b''.join(got))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "a"), str(done)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not fired.exists():
            assert child.poll() is None, "the child ended without pausing"
            assert time.monotonic() < deadline, "the pause never fired"
            time.sleep(0.02)
        assert json.loads(fired.read_text()) == {"method": "get", "name": "obj", "count": 1}
        assert child.poll() is None and not done.exists()  # waiting for the release file
        release.touch()
        assert child.wait(60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert done.read_bytes() == b"payload" * 4
