"""Issue 15, must-show: PostgreSQL stopped for 30 s and started again while replication and
operator calls go on. During the outage every call fails with the clear, stable
MetadataUnavailable (ASR-0051, gRPC UNAVAILABLE); a replication cycle whose commit meets the
outage acknowledges nothing; nothing acknowledged before is lost; and the service resumes by
itself once PostgreSQL is back: no restart of the cloud service, of the agent or of anything else.

The test runs a PostgreSQL of its own (stopping the session's would pull it from under others).
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.hypervisor import LocalHypervisor
from tests.harness import Cloud, Procs, wait_for
from tests.pgserver import PgServer
from tests.replication.fixture import MiB, protect

OUTAGE_S = 30.0


def _unavailable(res: object) -> bool:
    text = getattr(res, "stderr", "") + getattr(res, "stdout", "")
    return getattr(res, "returncode", None) == 51 and "ASR-0051" in text and "metadata store unavailable" in text


def _lost(acked: list[dict[str, Any]], listed: list[dict[str, Any]]) -> list[str]:
    """Acknowledged points neither listed nor replaced by retention's rule (a later point of the
    same 30 s copy interval is kept instead: tests/vaultstore retention)."""
    def at(x: dict[str, Any]) -> float:   # "created_at": the CLI's RFC 3339 or the cycle's epoch float
        t = x["created_at"]
        return float(t) if not isinstance(t, str) else datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()

    have = {x["point_id"] for x in listed}
    buckets = {int(at(x) // 30) for x in listed}
    newest = max(at(x) for x in listed)
    return [a["point_id"] for a in acked if a["point_id"] not in have
            and not (int(at(a) // 30) in buckets and at(a) <= newest)]


def test_postgres_down_30s_during_replication_and_operator_calls(procs: Procs, tmp_path: Path,
                                                                own_pg: PgServer) -> None:
    cloud = Cloud(procs, tmp_path / "cloud", database_url=own_pg.new_database()).start()
    p = protect(cloud, tmp_path, os_size=16 * MiB)
    acked = [p.once()]
    p.write(0, 0, 2 * MiB, 0x42)
    acked.append(p.once())

    # a cycle paused inside its upload when PostgreSQL goes away: its commit meets the outage
    # (incompressible changes over several 1 MiB PutChunks calls, as in test_kill9)
    gate = tmp_path / "gate"
    gate.mkdir()
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    for off in range(4 * MiB, 8 * MiB, 64 * 1024):
        hv.write("vm1", 0, off, os.urandom(64 * 1024))
    hv.close()
    os.environ.update(ASR_TEST_UPLOAD_PAUSE=f"1:{gate}", ASR_REPL_SEGMENT_BYTES=str(MiB))
    try:
        cycle = p.start_once()
    finally:
        os.environ.pop("ASR_TEST_UPLOAD_PAUSE")
        os.environ.pop("ASR_REPL_SEGMENT_BYTES")
    wait_for(lambda: (gate / "paused").exists(), 120, what="the cycle to pause inside its upload")

    own_pg.stop("immediate")                     # like a crash of the server
    down_at = time.monotonic()
    (gate / "go").touch()
    cycle.popen.wait(120)
    assert cycle.popen.returncode != 0, cycle.text()
    assert "ASR-0051" in cycle.text() or "metadata store unavailable" in cycle.text(), cycle.text()

    # operator calls, reads and writes, keep failing clearly for the whole outage
    calls = 0
    while time.monotonic() - down_at < OUTAGE_S:
        for args in (("vault", "list"), ("point", "list", "vm1", "--vault", "contoso"),
                     ("network", "create", "n1", "--vault", "contoso", "--region", "japaneast",
                      "--address-space", "10.0.0.0/16", "--subnet", "default=10.0.1.0/24")):
            res = cloud.asr(*args, check=False)
            assert _unavailable(res), (args, res.returncode, res.stderr)
            calls += 1
        assert "PostgreSQL at 127.0.0.1" in res.stderr and "postgres@" not in res.stderr.split("database:")[0]
        assert p.once(check=False)["returncode"] != 0   # a cycle without PostgreSQL commits nothing
        assert cloud.proc is not None and cloud.proc.alive(), cloud.proc.text() if cloud.proc else ""
    assert calls >= 6

    own_pg.start()
    # resumes by itself: the same cloud service process answers again
    wait_for(lambda: cloud.asr("vault", "list", check=False).returncode == 0, 60, what="the service to resume")
    assert cloud.asr("network", "list", "--vault", "contoso", "--json", check=False).returncode == 0
    acked.append(p.once())
    assert _lost(acked, p.points()) == []
    assert p.verify("latest")["ok"] is True
    for i, src in enumerate(p.snapshot_raw(tmp_path, "src")):
        assert p.export("latest", i, tmp_path / f"now{i}.raw").read_bytes() == src.read_bytes()
    # the background threads lived through it: a job still runs to its end
    assert cloud.asr_json("vm", "unprotect", "vm1", "--vault", "contoso", "--wait")["state"] == "Succeeded"
    assert cloud.proc is not None and cloud.proc.alive()
    assert "Traceback" not in cloud.proc.text() or "MetadataUnavailable" in cloud.proc.text()
