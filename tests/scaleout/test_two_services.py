"""Issue 15, must-show 2: two cloud services, one database, one storage account. A vault made
through one is used through the other; replication alternates between them point by point
and every point exports exactly (judged by qemu-img compare), through either service; a
command queued through B reaches the provider whose command stream is served by A. The storage
account is a local directory, or a blob container (Azurite) both reach by its connection string.
With the metadata in PostgreSQL the services share no directory for a blob account, as on two
machines: its chunk index is a schema of the database, not a file either of them has."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import pgserver
from tests.failover.fixture import compare
from tests.harness import Procs
from tests.replication.fixture import MiB, protect
from tests.scaleout.fixture import db_all, point_to, two_services


@pytest.mark.parametrize("backend", ["local", "blob"])
def test_replication_alternates_between_two_services(procs: Procs, tmp_path: Path, backend: str,
                                                     request: pytest.FixtureRequest,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The five points are taken seconds apart, in one copy interval, and retention keeps one
    # point per interval of the first hour: a maintenance run inside the test (every 60 s by
    # default, reached when the machine is slow: seen 2026-12-03 under load) deleted the
    # earlier points before their exports. Maintenance is not what this test is about.
    monkeypatch.setenv("ASR_MAINTENANCE_SECONDS", "3600")
    # blob: the storage account is a container of Azurite's, reached by both by its connection string
    blob = str(request.getfixturevalue("azurite")) if backend == "blob" else ""
    across_machines = bool(blob) and pgserver.wanted()
    a, b = two_services(procs, tmp_path, share_indexes=not across_machines)
    p = protect(a, tmp_path, blob_connection=blob)   # vault, storage account, site, protection through A
    # what A made, B shows and uses
    assert [v["name"] for v in b.asr_json("vault", "list")] == ["contoso"]
    assert [v["vm"]["name"] for v in b.asr_json("vm", "list", "--vault", "contoso")] == ["vm1"]
    assert b.asr_json("vm", "show", "vm1", "--vault", "contoso")["protection_state"] == "Protected"

    agent_dir = p.site.root / "hv01"
    refs: dict[str, tuple[str, list[Path]]] = {}      # point -> (the service that took it, disks)
    writes = [(0, 6 * 65536 - 100, 5000, 0x42), (1, 0, 4096, 0x7e), (0, 0, 65536, 0), (1, 4 * MiB - 4096, 4096, 9)]
    for i, svc in enumerate([a, b, a, b, a]):
        point_to(agent_dir, svc)
        if i:
            p.write(*writes[i - 1])
        res = p.once()
        refs[res["point_id"]] = (svc.name, p.snapshot_raw(tmp_path, f"p{i}"))
        # the point is visible through both services as soon as it is acknowledged
        for other in (a, b):
            assert [x["point_id"] for x in other.asr_json("point", "list", "vm1", "--vault", "contoso")] == list(refs)
    assert [name for name, _ in refs.values()] == ["cloudsvc", "cloudsvc-b"] * 2 + ["cloudsvc"]
    for pid, (_, disks) in refs.items():
        for svc in (a, b):
            for i, ref in enumerate(disks):
                out = tmp_path / f"export-{svc.name}-{pid}-{i}.raw"
                svc.asr("point", "export", "vm1", pid, "--disk", str(i), "--out", str(out), "--vault", "contoso")
                r = compare(out, "raw", ref, "raw")
                assert r.returncode == 0, (svc.name, pid, i, r.stdout, r.stderr)
    # and the latest point equals the live disks
    for i, (img, fmt) in enumerate(p.disks):
        out = tmp_path / f"latest-{i}.raw"
        b.asr("point", "export", "vm1", "latest", "--disk", str(i), "--out", str(out), "--vault", "contoso")
        assert compare(out, "raw", img, fmt).returncode == 0

    # the provider's command stream is served by A; a job started through B queues its command
    # in the database, A's stream finds it (it polls) and the acknowledgement ends B's job
    job = b.asr_json("vm", "unprotect", "vm1", "--vault", "contoso", "--wait")
    assert job["state"] == "Succeeded", job
    [cmd] = db_all(a, "SELECT state, delivered FROM commands WHERE id=(SELECT command_id FROM job_tasks"
                      " WHERE job_id=? AND command_id!='')", (job["id"],))
    assert cmd["state"] == "done" and cmd["delivered"] >= 1
    if across_machines:   # the index was in PostgreSQL all along, in neither data directory
        assert [r[0] for r in db_all(a, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ix_%'")] != []
        for svc in (a, b):
            assert list((svc.data_dir / "replication").rglob("*.index.db")) == [], svc.name
