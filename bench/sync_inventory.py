"""How long the vault takes to take in a provider's inventory of N VMs, on each metadata engine,
with one cloud service or two sharing the metadata (issue 15).

    .venv/bin/python bench/sync_inventory.py [--vms 2000] [--runs 5] [--engines sqlite,postgresql] [--services 1,2]

Starts a real cloud service, registers a provider, then sends full inventory syncs (every
VM with two disks and a NIC) over TLS gRPC and times each; the peer figure is the same
rows written straight into the engine in one transaction, i.e. the floor of the store.
PostgreSQL is a throw-away server started like the tests' (``tests/pgserver.py``); its run
also times a one-row write transaction with and without the advisory write lock.

With two services (B a clone of A, ``Cloud.clone``: one SQLite file or one PostgreSQL
database), the provider's syncs alternate between A and B run by run. Each service count
also has a concurrent case: two providers (two sites) with N/2 VMs each sync at the same time,
both through A with one service, one through A and one through B with two; the figure is the
wall time until both are taken in.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
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
from tests.scaleout.fixture import point_to  # noqa: E402


def inventory(n: int, hosts: int = 20, cloud_name: str = "gold", prefix: str = "") -> control_pb2.InventorySync:
    msg = control_pb2.InventorySync(generated_at=time.time())
    cloud = msg.clouds.add(name=cloud_name)
    per = n // hosts
    for h in range(hosts):
        host = cloud.hosts.add(name=f"{prefix}hv{h:02d}", connected=True, last_seen=time.time())
        for i in range(per):
            name = f"{prefix}vm-{h:02d}-{i:04d}"
            host.vms.add(
                vm_id=str(uuid.uuid4()), name=name, generation=1, cpus=2, memory_mb=4096,
                guest_os="windows-server-2019", power_state="Running",
                disks=[inventory_pb2.Disk(path=f"/vms/{name}/os.vhdx", controller="IDE", os_disk=True,
                                          format="vhdx", subformat="dynamic", virtual_size=40 << 30),
                       inventory_pb2.Disk(path=f"/vms/{name}/data.vhdx", controller="SCSI", format="vhdx",
                                          subformat="dynamic", virtual_size=100 << 30)],
                nics=[inventory_pb2.Nic(mode="dhcp")])
    return msg


def _renew_ids(msg: control_pb2.InventorySync) -> None:
    for c in msg.clouds:
        for h in c.hosts:
            for v in h.vms:
                v.vm_id = str(uuid.uuid4())  # every run replaces every VM


def _link(root: Path, name: str, site: Site, via: Cloud | None = None) -> CloudLink:
    """A provider ``name`` registered with the vault, its link on ``via`` (default: the first
    endpoint of the key file, the service that made it)."""
    state = root / name
    if not state.exists():
        register(key_file=str(site.key), role="provider", name=name, state_dir=str(state), clock=SystemClock())
    if via is not None:
        point_to(state, via)
    link = CloudLink(load(str(state)), SystemClock(), None)
    assert via is None or link.target == via.endpoint, (link.target, via.endpoint)
    return link


def sync_times(root: Path, procs: Procs, msg: control_pb2.InventorySync, runs: int,
               database_url: str = "", services: int = 1) -> tuple[list[float], list[float], int]:
    """Seconds of each full sync of one provider (alternating between A and B with two
    services), seconds of each pair of concurrent syncs of two providers with half the VMs
    each (both on A, or one on A and one on B), against fresh cloud services (SQLite, or the
    PostgreSQL database at ``database_url``); and how many VMs the vault lists afterwards."""
    a = Cloud(procs, root / "cloud", database_url=database_url).start()
    clouds = [a] if services == 1 else [a, a.clone(root / "cloud-b").start()]
    a.asr("vault", "create", "v", "--region", "japaneast")
    site = Site(a, root, "v")
    site.new_key()
    links = [_link(root, "p", site)]
    if services == 2:   # the same provider's registration, called through B
        shutil.copytree(root / "p", root / "p-b")
        links.append(_link(root, "p-b", site, clouds[1]))
    times = []
    for i in range(runs):
        _renew_ids(msg)
        link = links[i % len(links)]
        t0 = time.perf_counter()
        link.call(link.site.SyncInventory, msg, timeout=120)
        times.append(time.perf_counter() - t0)
    for link in links:
        link.close()

    half = len(_rows(msg)) // 2
    halves = [inventory(half, cloud_name="silver", prefix="q1-"), inventory(half, cloud_name="bronze", prefix="q2-")]
    pair = [_link(root, "q1", site, clouds[0]), _link(root, "q2", site, clouds[-1])]
    both = []
    errors: list[BaseException] = []

    def sync(link: CloudLink, m: control_pb2.InventorySync) -> None:
        try:
            link.call(link.site.SyncInventory, m, timeout=120)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    for _ in range(runs):
        for m in halves:
            _renew_ids(m)
        threads = [threading.Thread(target=sync, args=(lk, m)) for lk, m in zip(pair, halves, strict=True)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        both.append(time.perf_counter() - t0)
        if errors:
            raise errors[0]
    for link in pair:
        link.close()
    listed = len(a.asr_json("vm", "list", "--vault", "v"))
    for c in clouds:
        c.stop()
    return times, both, listed


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
    from metastore.postgres import PgConn, PgDatabase

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
    ap.add_argument("--services", default="1,2", help="comma-separated numbers of cloud services: 1, 2")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="asr-bench-sync-"))
    procs = Procs(root)
    msg = inventory(a.vms)
    print(f"inventory sync of {a.vms} VMs ({msg.ByteSize() / 1e6:.2f} MB message), {a.runs} runs:")
    n = len(_rows(msg))
    expected = n + 2 * len(_rows(inventory(n // 2)))   # the provider's, and the two halves'
    pg = None
    try:
        for engine in a.engines.split(","):
            url = ""
            if engine == "postgresql":
                from tests.pgserver import PgServer

                pg = PgServer().init()
                url = pg.new_database()
            peer = pg_peer(pg.new_database(), msg) if pg is not None and url else sqlite_peer(root, msg)
            print(f"  {engine}: peer, same rows straight in: {peer * 1000:.0f} ms")
            for services in (int(x) for x in a.services.split(",")):
                if engine == "postgresql" and url == "":
                    url = pg.new_database()  # type: ignore[union-attr]
                times, both, listed = sync_times(root / f"{engine}-{services}", procs, msg, a.runs, url, services)
                url = ""    # each case its own database
                how = "one service" if services == 1 else "two services, A and B alternately"
                pair = "both through A" if services == 1 else "one through A, one through B"
                print(f"  {engine}, {how}: median {statistics.median(times) * 1000:.0f} ms, "
                      f"max {max(times) * 1000:.0f} ms (TLS gRPC + replace in the store); "
                      f"two providers with {a.vms // 2} VMs each at once, {pair}: median "
                      f"{statistics.median(both) * 1000:.0f} ms, max {max(both) * 1000:.0f} ms; "
                      f"the vault lists {listed} VMs (of {expected})")
            if pg is not None and engine == "postgresql":
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
