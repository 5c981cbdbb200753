"""A quiesce hook that fails does not stop replication: each app-consistent slot falls back to
a crash-consistent point in the same cycle (exported exactly), the hook is not re-run every
cycle, and once the hook succeeds the next slot yields an app-consistent point. Real cloud,
real agent processes, a real hook script; the app-consistent frequency is 1 h on a fake clock."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from tests.harness import Cloud, Procs
from tests.replication.fixture import MiB, protect
from tests.replication.test_points import compare


def test_failing_hook_yields_crash_points_then_app_points(procs: Procs, tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    t0 = time.time() // 3600 * 3600           # the fake clock near real time: the daemon's own schedule stays idle
    clock.write_text(str(t0))
    cloud = Cloud(procs, tmp_path / "cloud", clock_file=clock).start()
    mode, ran, hook = tmp_path / "mode", tmp_path / "runs", tmp_path / "quiesce.sh"
    mode.write_text("fail")
    hook.write_text(f"""#!/bin/sh
echo run >> {ran}
if [ "$(cat {mode})" = ok ]; then exit 0; fi
echo "database is busy" >&2
exit 3
""")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    p = protect(cloud, tmp_path, app_hours=1, retention_hours=2, quiesce_hook=[str(hook), "db01"])

    def runs() -> int:
        return len(ran.read_text().splitlines()) if ran.exists() else 0

    refs: dict[str, list[Path]] = {}
    results = []
    for i in range(3):                        # the first is an app slot: the hook fails
        clock.write_text(str(t0 + 30 * i))
        p.write(i % 2, i * MiB, 65536, 0x20 + i)
        res = p.once()
        results.append(res)
        refs[res["point_id"]] = p.snapshot_raw(tmp_path, f"c{i}")
    assert [r["kind"] for r in results] == ["crash"] * 3
    assert runs() == 1                        # tried once for the slot, not at every cycle
    assert results[0]["warning"] == (f"quiesce hook {hook} db01 failed: exit 3: database is busy; "
                                     "the point is crash-consistent")
    assert results[0]["warning_code"] == "ASR-0045"
    assert results[1]["warning"] == "" and results[1]["blocks_changed"] == 1
    # the vault shows it: health Warning naming the hook, and one event
    st = cloud.asr_json("vm", "show", p.vm, "--vault", "contoso")
    assert st["replication_health"] == "Warning", st
    assert any("ASR-0045" in e and str(hook) in e for e in st["health_errors"]), st["health_errors"]
    events = cloud.asr_json("event", "list", "--vault", "contoso", "--vm", p.vm)
    assert [e["severity"] for e in events if e["code"] == "ASR-0045"] == ["Warning"], events

    mode.write_text("ok")
    clock.write_text(str(t0 + 3600 + 60))     # the next app-consistent slot
    p.write(1, 0, 4096, 0x77)
    res = p.once()
    assert res["kind"] == "app" and res["warning"] == "" and runs() == 2, res
    st = cloud.asr_json("vm", "show", p.vm, "--vault", "contoso")
    assert st["replication_health"] == "Normal", st
    events = cloud.asr_json("event", "list", "--vault", "contoso", "--vm", p.vm)
    assert any(e["code"] == "EVT-0006" for e in events), events
    refs[res["point_id"]] = p.snapshot_raw(tmp_path, "app")

    listed = p.points()
    assert [(x["point_id"], x["kind"]) for x in listed] == [(pid, "crash") for pid in list(refs)[:3]] + [
        (res["point_id"], "app")]
    for pid, disks in refs.items():
        for i, ref in enumerate(disks):
            out = p.export(pid, i, tmp_path / f"export-{pid}-{i}.raw")
            r = compare(out, "raw", ref, "raw")
            assert r.returncode == 0, (pid, i, r.stdout, r.stderr)
