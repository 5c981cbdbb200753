"""Issue 10, must-show 3: an export running while retention deletes its point finishes and is
exact. The export is paused inside a read of the store (a fault of the storage backend, with
a file that proves it fired), retention runs and would delete the point (retention 0 keeps
only the latest), and the export is released: the point was pinned, so it is still there and
the exported disk equals the source at the point's instant. Once the export ended, the next
maintenance deletes the point."""

from __future__ import annotations

from pathlib import Path

import pytest

from asrcli.client import Client
from asrpb import replication_pb2, replication_pb2_grpc
from tests.failover.fixture import compare
from tests.harness import BIN, Cloud, Procs, pause_fault, wait_for
from tests.replication.fixture import protect


def test_export_during_retention_is_exact(procs: Procs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_MAINTENANCE_SECONDS", "3600")    # only the maintenance this test runs
    cloud = Cloud(procs, tmp_path / "cloud").start()
    p = protect(cloud, tmp_path, retention_hours=0)
    old = p.once()["point_id"]
    refs = p.snapshot_raw(tmp_path, "old")
    p.write(0, 0, 3 * 65536, 0x21)
    new = p.once()["point_id"]

    fault = pause_fault(tmp_path, after=1)     # the export's second read of a pack: its first chunk window
    cloud.restart("cloudsvc-paused", **fault.env)
    out = tmp_path / "old-disk0.raw"
    export = procs.start("export", [str(BIN / "asr"), "point", "export", p.vm, old, "--disk", "0", "--out",
                                    str(out), "--vault", "contoso"], env=cloud.env())
    wait_for(fault.fired.exists, 60, what="the export paused inside a read of the store")

    client = Client(cloud.endpoint, str(cloud.credentials))
    stub = replication_pb2_grpc.PointsStub(client.channel)
    try:
        rep = client.call(stub.RunMaintenance, replication_pb2.MaintenanceRequest(vault="contoso"))
        assert rep.points_deleted == 0                    # the point being read is pinned
        assert [x["point_id"] for x in p.points()] == [old, new]
        fault.release.write_text("go")
        assert wait_for(lambda: export.popen.poll() is not None, 120, what="the export to finish") is not None
        assert export.popen.returncode == 0, export.text()
        assert compare(out, "raw", refs[0], "raw").returncode == 0
        rep = client.call(stub.RunMaintenance, replication_pb2.MaintenanceRequest(vault="contoso"))
        assert rep.points_deleted == 1
        assert [x["point_id"] for x in p.points()] == [new]
    finally:
        client.close()
