"""Issue 5: retention never deletes a point while a VM is being materialised from it, nor while
a test VM made from it runs; once the test is complete, the next maintenance prunes it.
The clock is injected, so the point is long past retention when maintenance runs."""

from __future__ import annotations

from pathlib import Path

from asrcli.client import Client
from asrpb import replication_pb2, replication_pb2_grpc
from tests.failover.fixture import VAULT, asr_job, assert_disks_equal, recovered
from tests.harness import Cloud, Procs, pause_fault, wait_for
from tests.replication.fixture import protect

T0 = 1_780_002_000.0 - 1_780_002_000.0 % 3600


def test_pinned_point_survives_maintenance(procs: Procs, tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text(str(T0))
    cloud = Cloud(procs, tmp_path / "cloud", clock_file=clock).start()
    p = protect(cloud, tmp_path, retention_hours=1)
    old = p.once()["point_id"]
    refs = p.snapshot_raw(tmp_path, "old")
    p.write(0, 0, 4096, 0x33)
    clock.write_text(str(T0 + 900))
    p.once()

    # materialisation paused inside a read of the store, so that maintenance runs in the middle of it
    # the failover first checks a tree node and a frame of each of the two disks (4 reads); the
    # 5th read is the materialisation's own
    fault = pause_fault(tmp_path, after=4)
    cloud.restart("cloudsvc-paused", **fault.env)
    client = Client(cloud.endpoint, str(cloud.credentials))
    stub = replication_pb2_grpc.PointsStub(client.channel)

    def maintain() -> int:
        rep = client.call(stub.RunMaintenance, replication_pb2.MaintenanceRequest(vault="contoso"))
        return int(rep.points_deleted)

    def points() -> list[str]:
        return [x["point_id"] for x in p.points()]

    job_id = cloud.asr_json("failover", "test", p.vm, *VAULT, "--point", old)["job_id"]
    wait_for(fault.fired.exists, 60, what="materialisation paused inside a read of the store")
    assert [r for r in recovered(p) if r["state"] == "Creating"]
    clock.write_text(str(T0 + 30 * 3600))            # far past the one-hour retention
    assert maintain() == 0
    assert old in points()
    fault.release.write_text("go")
    job = cloud.asr_json("job", "wait", job_id, *VAULT)
    assert job["state"] == "Succeeded", job
    [rvm] = recovered(p)
    assert rvm["point_id"] == old
    assert_disks_equal(rvm, refs)

    # the test VM made from it runs: still pinned
    assert maintain() == 0
    assert old in points()
    assert p.verify(old)["ok"] is True

    # test complete: the pin is gone, retention keeps only the latest point
    assert asr_job(p, "failover", "test-complete", p.vm)["state"] == "Succeeded"
    assert maintain() == 1
    assert old not in points() and len(points()) == 1
    client.close()
