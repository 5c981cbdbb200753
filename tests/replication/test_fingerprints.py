"""The agent's fingerprint files (agent/replication/fingerprints.py) against a model: after any
sequence of whole rewrites, in-place patches, failed cycles and crashes at any write, a file
is usable for a point only if it holds exactly that point's fingerprints."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.replication import fingerprints as fpmod
from agent.replication.fingerprints import FP_SIZE, DiskFingerprints

NBLOCKS = 12


class Crash(BaseException):
    """A kill -9 at a write: nothing after it runs, no cleanup."""


class CrashAt:
    """``os.pwrite`` that raises Crash instead of its ``crash_at``-th write (0-based)."""

    def __init__(self, real: Any, crash_at: int | None) -> None:
        self.real = real
        self.crash_at = crash_at
        self.calls = 0

    def __call__(self, fd: int, data: Any, offset: int) -> int:
        if self.crash_at is not None and self.calls == self.crash_at:
            raise Crash()
        self.calls += 1
        return int(self.real(fd, data, offset))


def fp(seed: int, block: int) -> bytes:
    return fpmod.fingerprint(f"{seed}/{block}".encode())


ops = st.lists(st.one_of(
    st.tuples(st.just("whole"), st.integers(0, 3), st.booleans(), st.none() | st.integers(0, 15)),
    st.tuples(st.just("patch"), st.sets(st.integers(0, NBLOCKS - 1), max_size=NBLOCKS), st.booleans(),
              st.none() | st.integers(0, 15)),
), max_size=12)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_file_is_usable_only_for_the_point_it_holds(program: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_program(Path(tmp), program)


def run_program(root: Path, program: list[tuple[Any, ...]]) -> None:
    disk = DiskFingerprints(root, 0)
    model: tuple[str, list[bytes]] | None = None    # (point, fingerprints) the file must hold
    acked = ""                                      # the cloud's latest point: the next base
    real_pwrite = fpmod._pwrite
    for n, (kind, arg, ack, crash_at) in enumerate(program):
        point = f"rp-{n}"
        pwrite = CrashAt(real_pwrite, crash_at)
        fpmod._pwrite = pwrite
        committing = False
        try:
            if kind == "whole":
                new = [fp(arg * 100 + n, b) for b in range(NBLOCKS)]
                pending = disk.pending(NBLOCKS, whole=True)
                for first in range(0, NBLOCKS, 5):
                    window = range(first, min(first + 5, NBLOCKS))
                    pending.add(window, b"".join(new[b] for b in window))
                if ack:
                    committing = True
                    pending.commit(point, acked)
                    model, acked = (point, new), point
                else:
                    pending.discard()
            else:
                blocks = sorted(arg)
                new_fps = {b: fp(n, b) for b in blocks}
                pending = disk.pending(NBLOCKS, whole=False)
                pending.add(blocks, b"".join(new_fps[b] for b in blocks))
                if ack:
                    committing = True
                    pending.commit(point, acked)
                    if model is not None and model[0] == acked:
                        model = (point, [new_fps.get(b, f) for b, f in enumerate(model[1])])
                    else:
                        model = None  # a file of another point is removed, not patched
                    acked = point
        except Crash:
            # Killed. Before the commit the cloud never acknowledged the point; during it,
            # it had. A whole rewrite dies before its rename (the old file stands); a patch
            # that got its first write (the cleared header) in leaves the file unusable.
            if committing:
                if kind == "patch" and pwrite.calls > 0:
                    model = None
                acked = point
        finally:
            fpmod._pwrite = real_pwrite
        check(disk, model, n)


def check(disk: DiskFingerprints, model: tuple[str, list[bytes]] | None, n: int) -> None:
    for m in range(-1, n + 1):
        point = f"rp-{m}"
        usable = disk.open_for(point, NBLOCKS)
        if usable:
            assert model is not None and model[0] == point, (point, model and model[0])
            assert disk.read(0, NBLOCKS) == b"".join(model[1])
            disk.close()
        else:
            assert model is None or model[0] != point
    if model is not None:  # never usable for a wrong size
        assert not disk.open_for(model[0], NBLOCKS + 1)


def test_disabled_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = DiskFingerprints(tmp_path, 0)
    pending = disk.pending(2, whole=True)
    pending.add(range(2), bytes(2 * FP_SIZE))
    pending.commit("rp-1", "")
    assert disk.open_for("rp-1", 2)
    disk.close()
    monkeypatch.setenv("ASR_RESYNC_FINGERPRINTS", "0")
    assert not disk.open_for("rp-1", 2)
