"""Issue 12, must-show 6: data replicated and then pruned is still billed, to the cent.

Real daemons on an injected clock: a VM protected at T0 with retention 0 (only the latest
point is kept) ships four points an hour apart, retention prunes three of them, and
protection is disabled 36 hours after it began, which deletes the last. No recovery point
is left; the month's bill still holds every byte the agent uploaded (its own count, from
``once``), and the charges are what the price list says for 1.5 protected days."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from agent.hypervisor import LocalHypervisor
from asrcli.client import Client
from asrpb import replication_pb2, replication_pb2_grpc
from tests.harness import Cloud, Procs
from tests.replication.fixture import protect

T0 = datetime(2026, 6, 10, tzinfo=UTC).timestamp()
HOUR = 3600.0


def test_replicated_then_pruned_is_still_billed_to_the_cent(procs: Procs, tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text(str(T0))
    cloud = Cloud(procs, tmp_path / "cloud", clock_file=clock).start()
    p = protect(cloud, tmp_path, retention_hours=0)
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    client = Client(cloud.endpoint, str(cloud.credentials))
    stub = replication_pb2_grpc.PointsStub(client.channel)
    uploaded = []
    try:
        for i in range(4):
            clock.write_text(str(T0 + i * HOUR))
            hv.write("vm1", 1, i * 65536, os.urandom(3 * 65536))   # random: nothing compresses or repeats
            uploaded.append(int(p.once()["bytes_sent"]))
        assert all(b > 3 * 65536 for b in uploaded), uploaded
        clock.write_text(str(T0 + 3 * HOUR + 10))
        pruned = client.call(stub.RunMaintenance, replication_pb2.MaintenanceRequest(vault="contoso"))
        assert pruned.points_deleted == 3 and len(p.points()) == 1
        clock.write_text(str(T0 + 36 * HOUR))
        assert cloud.asr_json("vm", "unprotect", "vm1", "--vault", "contoso", "--wait")["state"] == "Succeeded"
        assert cloud.db_rows("recovery_points") == []

        bill = cloud.asr_json("billing", "report", "--vault", "contoso", "--month", "2026-06")
    finally:
        hv.close()
        client.close()
    assert int(bill["replicated_bytes"]) == sum(uploaded)
    [line] = bill["vms"]
    assert line["name"] == "vm1" and int(line["replicated_bytes"]) == sum(uploaded)
    assert line["protected_days"] == 1.5
    # 1.5 VM-days of a 30-day month at $25.00; 100 GB × 1.5 / 30 = 5 GB included, more than shipped
    protection = (Decimal("1.5") * 25 / 30).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert protection == Decimal("1.25")
    assert Decimal(str(bill["protection_charge"])) == protection
    assert Decimal(str(bill["storage_charge"])) == Decimal("0.00")
    assert Decimal(str(bill["total"])) == protection
    assert bill["included_gb"] == 5.0 and bill["excess_gb"] == 0.0
