"""The vault's copy of VMM's inventory: clouds, hosts and VMs synced by providers.

A sync carries the complete inventory of every cloud the provider syncs; whatever of that
provider is not in it any more is deleted (deletions propagate). One transaction per sync:
readers never see half a sync.
"""

from __future__ import annotations

import json
import sqlite3

from google.protobuf.json_format import MessageToDict, ParseDict

from asrclock import Clock
from asrerrors import NotFound, UsageError
from asrpb import control_pb2, inventory_pb2
from sqlitestore.database import Database
from vmspec.wire import spec_to_vm, vm_to_spec


class Inventory:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def apply_sync(self, vault_id: str, provider: str, sync: control_pb2.InventorySync) -> control_pb2.SyncSummary:
        now = self.clock.now()
        names = [c.name for c in sync.clouds]
        if len(set(names)) != len(names):
            raise UsageError("an inventory sync names a cloud twice")
        hosts = vms = 0
        with self.db.write() as conn:
            before = {r["vm_id"] for r in conn.execute(
                "SELECT vm_id FROM vms WHERE vault_id=? AND provider=?", (vault_id, provider))}
            for t in ("vms", "hosts", "clouds"):
                conn.execute(f"DELETE FROM {t} WHERE vault_id=? AND provider=?", (vault_id, provider))
            seen: set[str] = set()
            for cloud in sync.clouds:
                conn.execute("INSERT OR REPLACE INTO clouds(vault_id, name, provider, synced_at) VALUES (?,?,?,?)",
                             (vault_id, cloud.name, provider, now))
                for host in cloud.hosts:
                    hosts += 1
                    conn.execute(
                        "INSERT OR REPLACE INTO hosts(vault_id, name, cloud, provider, connected, last_seen)"
                        " VALUES (?,?,?,?,?,?)",
                        (vault_id, host.name, cloud.name, provider, int(host.connected), host.last_seen),
                    )
                    for vm in host.vms:
                        vms += 1
                        seen.add(vm.vm_id)
                        vm.host = host.name
                        conn.execute(
                            "INSERT OR REPLACE INTO vms(vault_id, vm_id, name, host, cloud, provider, spec, updated_at)"
                            " VALUES (?,?,?,?,?,?,?,?)",
                            (vault_id, vm.vm_id, vm.name, host.name, cloud.name, provider,
                             vm.SerializeToString(), now),
                        )
        return control_pb2.SyncSummary(clouds=len(sync.clouds), hosts=hosts, vms=vms,
                                       removed_vms=len(before - seen))

    def clouds(self, vault_id: str) -> list[dict[str, object]]:
        out = []
        for c in self.db.query("SELECT * FROM clouds WHERE vault_id=? ORDER BY name", (vault_id,)):
            hosts = [h["name"] for h in self.db.query(
                "SELECT name FROM hosts WHERE vault_id=? AND cloud=? ORDER BY name", (vault_id, c["name"]))]
            n = self.db.one("SELECT count(*) AS n FROM vms WHERE vault_id=? AND cloud=?", (vault_id, c["name"]))
            out.append({"name": c["name"], "provider": c["provider"], "hosts": hosts, "vms": n["n"] if n else 0})
        return out

    def cloud(self, vault_id: str, name: str) -> sqlite3.Row:
        row = self.db.one("SELECT * FROM clouds WHERE vault_id=? AND name=?", (vault_id, name))
        if row is None:
            raise NotFound(f"cloud {name!r} is not synced to this vault",
                           causes=("The provider has not synced yet, or its configuration marks the cloud"
                                   " sync = false.",),
                           action="List synced clouds with 'asr cloud list'.")
        return row

    def hosts(self, vault_id: str, cloud: str) -> list[sqlite3.Row]:
        return self.db.query("SELECT * FROM hosts WHERE vault_id=? AND cloud=? ORDER BY name", (vault_id, cloud))

    def vms(self, vault_id: str, cloud: str = "") -> list[sqlite3.Row]:
        if cloud:
            return self.db.query("SELECT * FROM vms WHERE vault_id=? AND cloud=? ORDER BY name", (vault_id, cloud))
        return self.db.query("SELECT * FROM vms WHERE vault_id=? ORDER BY name", (vault_id,))

    def find_vm(self, vault_id: str, ref: str) -> sqlite3.Row:
        rows = self.db.query("SELECT * FROM vms WHERE vault_id=? AND (name=? OR vm_id=?)", (vault_id, ref, ref))
        if not rows:
            raise NotFound(f"VM {ref!r} is not in this vault's inventory",
                           action="List VMs with 'asr vm list'; the provider syncs new VMs within seconds.")
        if len(rows) > 1:
            ids = ", ".join(f"{r['vm_id']} on {r['host']}" for r in rows)
            raise UsageError(f"VM name {ref!r} is ambiguous ({ids})", action="Name the VM by its id.")
        return rows[0]


def parse_vm(row: sqlite3.Row) -> inventory_pb2.Vm:
    vm = inventory_pb2.Vm()
    vm.ParseFromString(row["spec"])
    return vm


def dumps_policy(p: inventory_pb2.Policy) -> str:
    return json.dumps(MessageToDict(p, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))


def loads_policy(text: str) -> inventory_pb2.Policy:
    return ParseDict(json.loads(text), inventory_pb2.Policy())


__all__ = ["Inventory", "dumps_policy", "loads_policy", "parse_vm", "spec_to_vm", "vm_to_spec"]
