"""Issue 15, must-show 4: kill -9 of one cloud service during replication. Two services A and
B share one metadata database (SQLite, or PostgreSQL with ASR_TEST_DATABASE=postgresql) and
one storage account (a local directory both reach); the key file, so the provider's and the
agent's registrations, lists both endpoints, A first. An initial copy pauses inside its upload
to A; A is killed with SIGKILL there; the cycle goes on through B without copying again what A
had made durable, the point exports exactly (qemu-img compare), the provider's and the
agent's links settle on B, and the next cycle ships only the changed block."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.hypervisor import LocalHypervisor
from tests.failover.fixture import compare
from tests.harness import BIN, Procs, run
from tests.replication.fixture import MiB, protect, serve_endpoints
from tests.replication.test_cloud_endpoints import wait_on
from tests.scaleout.fixture import two_services

CHUNK = 65536


def test_kill9_of_a_service_mid_upload_the_cycle_goes_on_through_the_other(
        procs: Procs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_REPL_SEGMENT_BYTES", str(MiB))   # the completed calls' chunks are durable
    a, b = two_services(procs, tmp_path)
    # A's key files name both services, A first (the clients' order)
    serve_endpoints(a, [a.endpoint, b.endpoint], [f"{a.host}:{a.reg_port}", f"{b.host}:{b.reg_port}"])
    p = protect(a, tmp_path, os_size=16 * MiB, fill=False)
    reg = json.loads((tmp_path / "hv01" / "registration.json").read_text())
    assert reg["endpoints"]["api"] == [a.endpoint, b.endpoint]
    wait_on(p.site, a.endpoint)
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    for off in range(0, 12 * MiB, MiB):                      # incompressible content
        hv.write("vm1", 0, off, os.urandom(MiB))
    hv.close()
    refs = p.snapshot_raw(tmp_path, "initial")
    full = 12 * MiB // CHUNK       # the chunks written; the rest of both disks is unallocated

    # the initial copy stops inside its upload to A (after 3 messages of 2 MiB: at least two
    # 1 MiB calls are durable in the shared storage account); A dies there
    gate = tmp_path / "gate"
    proc = p.start_paused_once(3, gate)
    assert a.proc is not None
    a.proc.kill9()
    (gate / "go").touch()
    assert proc.popen.wait(180) == 0, proc.text()
    res = json.loads([line for line in proc.text().splitlines() if line.startswith('{"vm_id"')][-1])
    assert 0 < res["chunks_sent"] < full, res                # resumed through B, not copied again
    assert "replication cycle moves to the next cloud endpoint" in proc.text()

    p.cloud = b                                              # the operator's asr goes to B now
    [point] = p.points()
    assert point["point_id"] == res["point_id"]
    for i, ref in enumerate(refs):
        out = p.export(res["point_id"], i, tmp_path / f"export-{i}.raw")
        r = compare(out, "raw", ref, "raw")
        assert r.returncode == 0, (i, r.stdout, r.stderr)

    # the daemons' links are on B; status names it as the second of the two endpoints
    wait_on(p.site, b.endpoint, 60)
    for cmd, cfg in (("asr-agent", "hv01.toml"), ("asr-provider", "prov1.toml")):
        st = run([str(BIN / cmd), "status", "--config", str(tmp_path / cfg)], env=b.env())
        assert st.returncode == 0 and f"{b.endpoint} (endpoint 2 of 2)" in st.stdout, (cmd, st.stdout + st.stderr)

    # the next cycle ships only the changed block, through B, and exports exactly too
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    hv.write("vm1", 0, 5 * MiB, os.urandom(CHUNK))
    hv.close()
    again = p.once()
    assert again["chunks_sent"] == 1, again
    assert len(p.points()) == 2
    for i, ref in enumerate(p.snapshot_raw(tmp_path, "next")):
        out = p.export(again["point_id"], i, tmp_path / f"export-next-{i}.raw")
        assert compare(out, "raw", ref, "raw").returncode == 0, i
