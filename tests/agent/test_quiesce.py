"""A failing quiesce hook costs app-consistency, never the point: the cycle falls back to a
crash-consistent snapshot, reports the warning (ASR-0045), tries the hook again only at the
next app-consistent slot, and a later app point clears the warning. Without a cloud."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.hypervisor import quiesce
from asrerrors import QuiesceFailed
from tests.agent.fakes import Host, make_host

HOUR = 3600.0


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = make_host(tmp_path)
    yield h
    h.close()


def hook_script(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A hook that fails (exit 3, "database is busy") until MODE holds "ok"; RUNS counts calls."""
    mode, runs, hook = tmp_path / "mode", tmp_path / "runs", tmp_path / "quiesce.sh"
    mode.write_text("fail")
    hook.write_text(f"""#!/bin/sh
echo run >> {runs}
if [ "$(cat {mode})" = ok ]; then echo quiesced; exit 0; fi
echo "flushing tables" ; echo "database is busy" >&2
exit 3
""")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    return hook, mode, runs


def runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_failing_hook_falls_back_and_is_retried_at_the_next_slot(host: Host, tmp_path: Path) -> None:
    hook, mode, ran = hook_script(tmp_path)
    vm_id = host.add_vm("vm1", hook=[str(hook), "--db", "main"], app_hours=1)
    engine = host.engine()

    res = engine.replicate(vm_id)                              # an app slot: the hook fails
    expected = (f"quiesce hook {hook} --db main failed: exit 3: flushing tables database is busy; "
                "the point is crash-consistent")
    assert (res.kind, res.warning, res.warning_code) == ("crash", expected, "ASR-0045")
    assert res.point_id == host.rpc.points[-1] and runs(ran) == 1
    [report] = host.rpc.requests("ReportProgress")
    assert (report.warning, report.warning_code, report.error, report.epoch) == (expected, "ASR-0045", "", 2)

    host.clock.advance(30)
    mode.write_text("ok")
    res = engine.replicate(vm_id)                              # not a slot yet: no hook, crash point
    assert res.kind == "crash" and res.warning == "" and runs(ran) == 1
    assert len(host.rpc.points) == 2

    host.clock.advance(HOUR)                                   # the next slot: app-consistent again
    res = engine.replicate(vm_id)
    assert res.kind == "app" and runs(ran) == 2
    last = host.rpc.requests("ReportProgress")[-1]
    assert (last.warning, last.warning_code) == ("", "")       # the warning is cleared
    host.clock.advance(30)
    assert engine.replicate(vm_id).kind == "crash" and runs(ran) == 2


def test_warning_rides_on_every_report_until_cleared(host: Host, tmp_path: Path) -> None:
    from asrerrors import Unreachable

    hook, _, _ = hook_script(tmp_path)
    vm_id = host.add_vm("vm1", hook=[str(hook)], app_hours=1)
    engine = host.engine()
    engine.replicate(vm_id)
    host.rpc.fail["CommitPoint"] = Unreachable("the cloud service is unreachable")
    host.clock.advance(30)
    with pytest.raises(Unreachable):
        engine.replicate(vm_id)
    last = host.rpc.requests("ReportProgress")[-1]
    assert last.error.startswith("ASR-0050") and last.warning.startswith(f"quiesce hook {hook} failed: exit 3")


@pytest.mark.parametrize("case", ["missing", "not executable", "killed", "no exit"])
def test_every_kind_of_hook_failure_falls_back(host: Host, tmp_path: Path, case: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    hook = tmp_path / "hook.sh"
    if case == "not executable":
        hook.write_text("#!/bin/sh\nexit 0\n")
    elif case == "killed":
        hook.write_text("#!/bin/sh\nkill -9 $$\n")
        hook.chmod(0o755)
    elif case == "no exit":
        # the hook never exits (its child holds the output pipe too): only the deadline ends it
        hook.write_text("#!/bin/sh\necho stuck\nsleep 3600 &\nwait\n")
        hook.chmod(0o755)
        monkeypatch.setattr(quiesce, "HOOK_TIMEOUT_S", 0.5)
    vm_id = host.add_vm("vm1", hook=[str(hook)], app_hours=1)
    res = host.engine().replicate(vm_id)
    assert res.kind == "crash" and res.warning_code == "ASR-0045" and res.point_id, res
    want = {"missing": "could not be run (No such file or directory)",
            "not executable": "could not be run (Permission denied)",
            "killed": "failed: signal 9", "no exit": "no exit within 0.5 s: stuck"}[case]
    assert want in res.warning, res.warning


def test_the_hypervisor_refuses_an_app_snapshot_when_the_hook_fails(host: Host, tmp_path: Path) -> None:
    hook, _, _ = hook_script(tmp_path)
    host.add_vm("vm1", hook=[str(hook)])
    with pytest.raises(QuiesceFailed, match="exit 3"):
        host.hv.snapshot("vm1", app_consistent=True)
    snap = host.hv.snapshot("vm1")                            # nothing was left open
    assert not snap.app_consistent
    snap.commit()
    assert os.path.exists(hook)
