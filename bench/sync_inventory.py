"""How long the vault takes to take in a provider's inventory of N VMs.

    .venv/bin/python bench/sync_inventory.py [--vms 2000] [--runs 5]

Starts a real cloud service, registers a provider, then sends full inventory syncs (every
VM with two disks and a NIC) over TLS gRPC and times each; the peer figure is the same
rows written straight into SQLite in one transaction, i.e. the floor of the store.
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="asr-bench-sync-"))
    procs = Procs(root)
    try:
        cloud = Cloud(procs, root / "cloud").start()
        cloud.asr("vault", "create", "v", "--region", "japaneast")
        site = Site(cloud, root, "v")
        site.new_key()
        register(key_file=str(site.key), role="provider", name="p", state_dir=str(root / "p"), clock=SystemClock())
        link = CloudLink(load(str(root / "p")), SystemClock(), None)
        msg = inventory(a.vms)
        size = msg.ByteSize()
        times = []
        for _ in range(a.runs):
            for c in msg.clouds:
                for h in c.hosts:
                    for v in h.vms:
                        v.vm_id = str(uuid.uuid4())  # every run replaces every VM
            t0 = time.perf_counter()
            link.call(link.site.SyncInventory, msg, timeout=120)
            times.append(time.perf_counter() - t0)
        link.close()
        listed = len(cloud.asr_json("vm", "list", "--vault", "v"))
        # peer: the same rows straight into SQLite
        db = sqlite3.connect(root / "peer.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE vms(vm_id TEXT PRIMARY KEY, name TEXT, host TEXT, spec BLOB)")
        t0 = time.perf_counter()
        with db:
            for c in msg.clouds:
                for h in c.hosts:
                    for v in h.vms:
                        db.execute("INSERT INTO vms VALUES (?,?,?,?)", (v.vm_id, v.name, h.name, v.SerializeToString()))
        peer = time.perf_counter() - t0
        print(f"inventory sync of {a.vms} VMs ({size / 1e6:.2f} MB message), {a.runs} runs:")
        print(f"  median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
              f"(TLS gRPC + replace in SQLite, synchronous=FULL)")
        print(f"  peer: same rows inserted directly into SQLite: {peer * 1000:.0f} ms")
        print(f"  vault lists {listed} VMs afterwards")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
