"""How long the portal's dashboard (and VM list) takes to render for a vault of N protected VMs.

    .venv/bin/python bench/portal_dashboard.py [--vms 2000] [--runs 10]

Initialises a real cloud service data directory (``asr-cloudsvc init``), fills its metadata
store with N protected VMs, each with a replication status and the recovery points of a day
(24 hourly points plus one every 5 minutes in the last hour), builds the cloud service and
its portal in this process as ``serve`` does, signs an operator in, and times GET of the
dashboard and of the VM list through the WSGI application: server time, TLS and browser
excluded. The goal is under 1 s for 2,000 VMs (issue 13); this prints, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asrclock import SystemClock  # noqa: E402
from asrpb import inventory_pb2  # noqa: E402
from cloudsvc import config as cfgmod  # noqa: E402
from cloudsvc.inventory import dumps_policy  # noqa: E402
from cloudsvc.portal.app import SESSION_COOKIE, create_app  # noqa: E402
from cloudsvc.service import CloudService  # noqa: E402

BIN = Path(sys.executable).parent


def fill(svc: CloudService, vault_id: str, n: int, now: float) -> int:
    """N protected VMs on 20 hosts with a day of recovery points; returns the points written."""
    policy = dumps_policy(inventory_pb2.Policy(storage="store1", copy_frequency_seconds=300, retention_hours=24))
    vms, items, status, points = [], [], [], []
    for i in range(n):
        vm_id, name, host = str(uuid.uuid4()), f"vm-{i:04d}", f"hv{i % 20:02d}"
        spec = inventory_pb2.Vm(vm_id=vm_id, name=name, host=host, generation=1, cpus=2, memory_mb=4096,
                                guest_os="windows-server-2019").SerializeToString()
        vms.append((vault_id, vm_id, name, host, "gold", "prov1", spec, now))
        items.append((vault_id, vm_id, name, "gold", "prov1", "Protected", policy, now - 86400, now))
        # every 50th VM is late (an RPO of 40 minutes), so the chart and the health have something to show
        late = 2400.0 if i % 50 == 0 else 0.0
        times = [now - 86400 + h * 3600 + (i % 300) for h in range(24)]
        times += [now - 3600 + k * 300 + (i % 300) - late for k in range(12) if now - 3600 + k * 300 - late < now]
        points += [(vault_id, vm_id, uuid.uuid4().hex, "store1", t, "crash", 1 << 20, 16, t + 1) for t in times]
        status.append((vault_id, vm_id, points[-1][2], times[-1], times[-1] + 1, 1.0, now))
    with svc.db.write() as conn:
        conn.executemany("INSERT INTO vms(vault_id, vm_id, name, host, cloud, provider, spec, updated_at) "
                         "VALUES (?,?,?,?,?,?,?,?)", vms)
        conn.executemany("INSERT INTO protected_items(vault_id, vm_id, name, cloud, provider, state, policy, "
                         "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)", items)
        conn.executemany("INSERT INTO replication_status(vault_id, vm_id, last_point_id, last_point_at, "
                         "last_commit_at, initial_progress, updated_at) VALUES (?,?,?,?,?,?,?)", status)
        conn.executemany("INSERT INTO recovery_points(vault_id, vm_id, point_id, storage, created_at, kind, "
                         "uploaded_bytes, changed_blocks, committed_at) VALUES (?,?,?,?,?,?,?,?,?)", points)
    return len(points)


def timed(client: object, url: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        res = client.get(url)  # type: ignore[attr-defined]
        out.append(time.perf_counter() - t0)
        assert res.status_code == 200, res.status_code
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="asr-bench-portal-"))
    data = root / "cloud"
    subprocess.run([str(BIN / "asr-cloudsvc"), "init", "--data-dir", str(data)], check=True, capture_output=True)
    svc = CloudService(cfgmod.load(str(data)), SystemClock())
    try:
        now = time.time()
        vault = svc.vaults.create("contoso", "japaneast")
        t0 = time.perf_counter()
        n_points = fill(svc, vault.id, a.vms, now)
        print(f"filled {a.vms} protected VMs, {n_points} recovery points in {time.perf_counter() - t0:.1f} s")
        op = svc.operators.create("bench", "Reader")
        token, _ = svc.operators.sign_in("bench", op.password)
        app = create_app(svc)
        client = app.test_client()
        client.set_cookie(SESSION_COOKIE, token, domain="localhost")
        results = {}
        for name, url in (("dashboard", "/vaults/contoso/"), ("vm list", "/vaults/contoso/vms"),
                          ("vm list, filtered Warning", "/vaults/contoso/vms?health=Warning")):
            times = timed(client, url, a.runs)
            results[name] = times
            print(f"{name:28s} median {statistics.median(times) * 1000:7.1f} ms   "
                  f"max {max(times) * 1000:7.1f} ms   ({a.runs} runs, {a.vms} VMs)")
        print(json.dumps({k: round(statistics.median(v), 4) for k, v in results.items()}))
    finally:
        svc.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
