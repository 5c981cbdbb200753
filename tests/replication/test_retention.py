"""Issue 4, must-show 6: retention and garbage collection with an injected clock. The kept
points are exactly the policy's (every interval in the first hour, the latest of each hour
within the retention, app-consistent points at their frequency, always the latest), and
after points expire the storage shrinks back to what the live point needs."""

from __future__ import annotations

import os
from pathlib import Path

from agent.hypervisor import LocalHypervisor
from asrcli.client import Client
from asrpb import replication_pb2, replication_pb2_grpc
from tests.harness import Cloud, Procs
from tests.replication.fixture import protect

T0 = 1_780_002_000.0 - 1_780_002_000.0 % 3600  # an hour boundary


def test_retention_and_gc_with_injected_clock(procs: Procs, tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text(str(T0))
    cloud = Cloud(procs, tmp_path / "cloud", clock_file=clock).start()
    p = protect(cloud, tmp_path, retention_hours=2, app_hours=1)
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    client = Client(cloud.endpoint, str(cloud.credentials))
    stub = replication_pb2_grpc.PointsStub(client.channel)

    def maintain() -> replication_pb2.MaintenanceReport:
        return client.call(stub.RunMaintenance, replication_pb2.MaintenanceRequest(vault="contoso"))

    ids = []
    sizes = []
    for i in range(12):                               # a point every 15 minutes for 3 hours
        clock.write_text(str(T0 + i * 900))
        hv.write("vm1", 1, 0, os.urandom(65536))      # the same block, new content each time
        ids.append(p.once()["point_id"])
        sizes.append(maintain().bytes_after if i == 0 else 0)
    kinds = {x["point_id"]: x["kind"] for x in p.points()}
    # the agent takes an app-consistent point when the last one is an hour (by the clock) old
    assert [i for i in range(12) if kinds[ids[i]] == "app"] == [0, 4, 8]
    clock.write_text(str(T0 + 11 * 900 + 10))
    before = maintain()
    kept = [x["point_id"] for x in p.points()]
    # window (now-2h, now]: points 4..11; first hour: 8..11 each in its own 30 s interval;
    # hourly: 7 (hour 1) and 11 (hour 2); app-consistent hourly: 4 and 8
    assert kept == [ids[i] for i in (4, 7, 8, 9, 10, 11)], kept
    assert before.points_deleted == 6
    for pid in kept:
        assert p.verify(pid)["ok"] is True
    # a day later only the latest point is left, and the space of the others is collected
    clock.write_text(str(T0 + 30 * 3600))
    after = maintain()
    assert [x["point_id"] for x in p.points()] == [ids[11]]
    assert p.verify(ids[11])["ok"] is True
    assert after.bytes_after <= sizes[0] + 16 * 1024, (sizes[0], before.bytes_after, after.bytes_after)
    assert before.bytes_after > sizes[0] + 4 * 65536
    # the exported latest disk is still the live disk
    out = p.export("latest", 1, tmp_path / "d1.raw")
    assert out.read_bytes()[:65536] == hv.read("vm1", 1, 0, 65536)
    hv.close()
    client.close()
