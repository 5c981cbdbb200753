"""How long the vault takes to take in a provider's inventory of N VMs, on each metadata engine.

    .venv/bin/python bench/sync_inventory.py [--vms 2000] [--runs 5] [--engines sqlite,postgresql]

Starts a real cloud service, registers a provider, then sends full inventory syncs (every
VM with two disks and a NIC) over TLS gRPC and times each; the peer figure is the same
rows written straight into the engine in one transaction, i.e. the floor of the store.
PostgreSQL is a throw-away server started like the tests' (``tests/pgserver.py``); its run
also times a one-row write transaction with and without the advisory write lock.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asrclock import SystemClock  # noqa: E402
from asrpb import control_pb2, inventory_pb2  # noqa: E402
from registration.enrol import register  # noqa: E402
from registration.link import CloudLink  # noqa: E402
from registration.state import load  # noqa: E402
from tests.harness import Cloud, Procs, Site  # noqa: E402


def inventory(n: int, hosts: int = 20) -> control_pb2.InventorySync:
    msg = control_pb2.InventorySync(generated_at=time.time())
    cloud = msg.clouds.add(name="gold")
    per = n // hosts
    for h in range(hosts):
        host = cloud.hosts.add(name=f"hv{h:02d}", connected=True, last_seen=time.time())
        for i in range(per):
            name = f"vm-{h:02d}-{i:04d}"
            host.vms.add(
                vm_id=str(uuid.uuid4()), name=name, generation=1, cpus=2, memory_mb=4096,
                guest_os="windows-server-2019", power_state="Running",
                disks=[inventory_pb2.Disk(path=f"/vms/{name}/os.vhdx", controller="IDE", os_disk=True,
                                          format="vhdx", subformat="dynamic", virtual_size=40 << 30),
                       inventory_pb2.Disk(path=f"/vms/{name}/data.vhdx", controller="SCSI", format="vhdx",
                                          subformat="dynamic", virtual_size=100 << 30)],
                nics=[inventory_pb2.Nic(mode="dhcp")])
    return msg


def sync_times(root: Path, procs: Procs, msg: control_pb2.InventorySync, runs: int,
               database_url: str = "") -> tuple[list[float], int]:
    """Seconds of each full sync against a fresh cloud service (SQLite, or the PostgreSQL
    database at ``database_url``), and how many VMs the vault lists afterwards."""
    cloud = Cloud(procs, root / "cloud", database_url=database_url).start()
    cloud.asr("vault", "create", "v", "--region", "japaneast")
    site = Site(cloud, root, "v")
    site.new_key()
    register(key_file=str(site.key), role="provider", name="p", state_dir=str(root / "p"), clock=SystemClock())
    link = CloudLink(load(str(root / "p")), SystemClock(), None)
    times = []
    for _ in range(runs):
        for c in msg.clouds:
            for h in c.hosts:
                for v in h.vms:
                    v.vm_id = str(uuid.uuid4())  # every run replaces every VM
        t0 = time.perf_counter()
        link.call(link.site.SyncInventory, msg, timeout=120)
        times.append(time.perf_counter() - t0)
    link.close()
    listed = len(cloud.asr_json("vm", "list", "--vault", "v"))
    cloud.stop()
    return times, listed


def _rows(msg: control_pb2.InventorySync) -> list[tuple[str, str, str, bytes]]:
    return [(v.vm_id, v.name, h.name, v.SerializeToString()) for c in msg.clouds for h in c.hosts for v in h.vms]


def sqlite_peer(root: Path, msg: control_pb2.InventorySync) -> float:
    """The same rows straight into SQLite in one transaction: the floor of the store."""
    db = sqlite3.connect(root / "peer.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE vms(vm_id TEXT PRIMARY KEY, name TEXT, host TEXT, spec BLOB)")
    t0 = time.perf_counter()
    with db:
        db.executemany("INSERT INTO vms VALUES (?,?,?,?)", _rows(msg))
    peer = time.perf_counter() - t0
    db.close()
    return peer


def pg_peer(url: str, msg: control_pb2.InventorySync) -> float:
    """The same rows straight into PostgreSQL (psycopg, one transaction, synchronous_commit=on)."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE peer_vms(vm_id TEXT PRIMARY KEY, name TEXT, host TEXT, spec BYTEA)")
        conn.commit()
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO peer_vms VALUES (%s,%s,%s,%s)", _rows(msg))
        conn.commit()
        return time.perf_counter() - t0


def write_lock_cost(url: str, n: int = 300) -> tuple[float, float]:
    """Median ms of a one-row write transaction through PgDatabase, with the advisory lock (as
    shipped) and without it: what one writer across processes costs."""
    from cloudsvc.schema import MIGRATIONS
    from sqlitestore.postgres import PgConn, PgDatabase

    class NoLock(PgDatabase):
        def _begin(self, conn: PgConn, durable: bool) -> None:
            conn.raw.execute(b"BEGIN")

    out = []
    for cls in (PgDatabase, NoLock):
        db = cls(url, MIGRATIONS)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            with db.write() as conn:
                conn.execute("INSERT INTO operators(serial, name, created_at) VALUES (?,?,?)"
                             " ON CONFLICT (serial) DO UPDATE SET created_at=excluded.created_at",
                             (f"s{i % 10}", "bench", time.time()))
            times.append(time.perf_counter() - t0)
        db.close()
        out.append(statistics.median(times) * 1000)
    return out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--engines", default="sqlite,postgresql",
                    help="comma-separated: sqlite, postgresql (a throw-away server from tests/pgserver.py)")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="asr-bench-sync-"))
    procs = Procs(root)
    msg = inventory(a.vms)
    print(f"inventory sync of {a.vms} VMs ({msg.ByteSize() / 1e6:.2f} MB message), {a.runs} runs:")
    pg = None
    try:
        for engine in a.engines.split(","):
            url = ""
            if engine == "postgresql":
                from tests.pgserver import PgServer

                pg = PgServer().init()
                url = pg.new_database()
            times, listed = sync_times(root / engine, procs, msg, a.runs, url)
            peer = pg_peer(pg.new_database(), msg) if pg is not None and url else sqlite_peer(root, msg)
            print(f"  {engine}: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
                  f"(TLS gRPC + replace in the store); peer, same rows straight in: {peer * 1000:.0f} ms; "
                  f"the vault lists {listed} VMs")
            if url:
                with_lock, without = write_lock_cost(pg.new_database())  # type: ignore[union-attr]
                print(f"  postgresql: one-row write transaction, median of 300: {with_lock:.2f} ms with the "
                      f"advisory write lock, {without:.2f} ms without")
    finally:
        procs.stop_all()
        if pg is not None:
            pg.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
