"""The vault's copy of VMM's inventory: clouds, hosts and VMs synced by providers. This
module is the only writer of the ``clouds``, ``hosts`` and ``vms`` tables.

**Ownership.** Every row belongs to the provider that reported it. A sync carries the
complete inventory of every cloud that provider syncs; it may add and change its own rows,
and whatever of its own is not in it any more is removed — but a sync that names a cloud,
host or VM of another provider is refused as a whole (nothing changes) with an event naming
both providers: one provider can never overwrite or delete another's inventory.

**Protected VMs are never dropped.** A VM that is protected stays in the inventory when its
provider stops reporting it (its cloud was removed from the configuration, the VM was
deleted or moved away): its row, host and cloud are kept and marked missing, and its
protected item goes to SourceMissing (``lifecycle``) with an event, until the VM is reported
again or an operator disables protection.

One transaction per sync: readers never see half a sync.
"""

from __future__ import annotations

import json

from google.protobuf.json_format import MessageToDict, ParseDict

from asrclock import Clock
from asrerrors import NotFound, PermissionDenied, UsageError
from asrpb import control_pb2, inventory_pb2
from chunkfmt import DEFAULT_COMPRESSION
from cloudsvc.events import Events, Severity
from cloudsvc.lifecycle import ProtectedItems
from metastore.database import Conn, Database, Row
from vmspec.wire import spec_to_vm, vm_to_spec


class Inventory:
    def __init__(self, db: Database, clock: Clock, items: ProtectedItems, events: Events) -> None:
        self.db = db
        self.clock = clock
        self.items = items
        self.events = events

    def _conflicts(self, conn: Conn, vault_id: str, provider: str,
                   sync: control_pb2.InventorySync) -> list[str]:
        out = []

        # what the other providers own, in three queries: one query per VM was most of a
        # 2,000-VM sync on PostgreSQL (a network round trip each)
        def others(sql: str) -> dict[str, str]:
            return {r[0]: str(r[1]) for r in conn.execute(sql, (vault_id, provider)).fetchall()}

        clouds = others("SELECT name, provider FROM clouds WHERE vault_id=? AND provider<>?")
        hosts = others("SELECT name, provider FROM hosts WHERE vault_id=? AND provider<>?")
        vms = others("SELECT vm_id, provider FROM vms WHERE vault_id=? AND provider<>?")
        for cloud in sync.clouds:
            if other := clouds.get(cloud.name):
                out.append(f"cloud {cloud.name!r} belongs to provider {other!r}")
            for host in cloud.hosts:
                if other := hosts.get(host.name):
                    out.append(f"host {host.name!r} belongs to provider {other!r}")
                for vm in host.vms:
                    if other := vms.get(vm.vm_id):
                        out.append(f"VM {vm.name!r} ({vm.vm_id}) belongs to provider {other!r}")
        return out

    def apply_sync(self, vault_id: str, provider: str, sync: control_pb2.InventorySync) -> control_pb2.SyncSummary:
        now = self.clock.now()
        names = [c.name for c in sync.clouds]
        if len(set(names)) != len(names):
            raise UsageError("an inventory sync names a cloud twice")
        with self.db.write() as conn:
            conflicts = self._conflicts(conn, vault_id, provider, sync)
            if conflicts:
                owners = sorted({c.rsplit("provider ", 1)[-1] for c in conflicts})
                message = (f"provider {provider!r} tried to sync inventory that belongs to {', '.join(owners)}; "
                           f"the whole sync was refused: {'; '.join(conflicts[:5])}")
                # a misconfigured provider retries: one event per distinct refusal an hour
                last = conn.execute("SELECT at FROM events WHERE vault_id=? AND server=? AND code=? AND message=?"
                                    " ORDER BY id DESC LIMIT 1", (vault_id, f"provider/{provider}",
                                                                  PermissionDenied.code, message)).fetchone()
                if last is None or now - last["at"] > 3600:
                    self.events.record(conn, vault_id, Severity.CRITICAL, PermissionDenied.code, message,
                                       server=f"provider/{provider}")
        if conflicts:
            raise PermissionDenied(
                f"provider {provider!r} may not sync inventory that another provider reported",
                details=conflicts[:20],
                causes=("Two providers' configurations name the same cloud or host, or an agent was moved to "
                        "another provider without being removed from the first.",),
                action="Give each cloud and host to one provider only; remove it from the other provider's "
                       "configuration (or remove that provider with 'asr server remove') first.")
        hosts = vms = 0
        with self.db.write() as conn:
            vm_rows: list[tuple[object, ...]] = []
            seen_vms: set[str] = set()
            seen_hosts: set[str] = set()
            for cloud in sync.clouds:
                conn.execute("INSERT INTO clouds(vault_id, name, provider, synced_at, missing_since, networks)"
                             " VALUES (?,?,?,?,0,?) ON CONFLICT(vault_id, name) DO UPDATE SET"
                             " synced_at=excluded.synced_at, missing_since=0, networks=excluded.networks",
                             (vault_id, cloud.name, provider, now, json.dumps(list(cloud.networks))))
                for host in cloud.hosts:
                    hosts += 1
                    seen_hosts.add(host.name)
                    conn.execute(
                        "INSERT INTO hosts(vault_id, name, cloud, provider, connected, last_seen, missing_since,"
                        " replica_address, replica_free_bytes) VALUES (?,?,?,?,?,?,0,?,?)"
                        " ON CONFLICT(vault_id, name) DO UPDATE SET cloud=excluded.cloud,"
                        " connected=excluded.connected, last_seen=excluded.last_seen, missing_since=0,"
                        " replica_address=excluded.replica_address, replica_free_bytes=excluded.replica_free_bytes",
                        (vault_id, host.name, cloud.name, provider, int(host.connected), host.last_seen,
                         host.replica_address, max(0, host.replica_free_bytes)))
                    for vm in host.vms:
                        vms += 1
                        seen_vms.add(vm.vm_id)
                        vm.host = host.name
                        vm_rows.append((vault_id, vm.vm_id, vm.name, host.name, cloud.name, provider,
                                        vm.SerializeToString(), now))
            # one statement for all VMs: PostgreSQL pipelines it instead of a round trip per VM
            conn.executemany(
                "INSERT INTO vms(vault_id, vm_id, name, host, cloud, provider, spec, updated_at,"
                " missing_since) VALUES (?,?,?,?,?,?,?,?,0) ON CONFLICT(vault_id, vm_id) DO UPDATE SET"
                " name=excluded.name, host=excluded.host, cloud=excluded.cloud, spec=excluded.spec,"
                " updated_at=excluded.updated_at, missing_since=0", vm_rows)
            removed = self._forget_unseen(conn, vault_id, provider, seen_vms, seen_hosts, set(names), now)
            self.reconcile(conn, vault_id, provider)
        return control_pb2.SyncSummary(clouds=len(sync.clouds), hosts=hosts, vms=vms, removed_vms=removed)

    def _forget_unseen(self, conn: Conn, vault_id: str, provider: str, vms: set[str],
                       hosts: set[str], clouds: set[str], now: float) -> int:
        """Delete this provider's rows the sync no longer has, except protected VMs and the
        host and cloud they are on, which are kept and marked missing."""
        protected = {r["vm_id"] for r in conn.execute("SELECT vm_id FROM protected_items WHERE vault_id=?",
                                                      (vault_id,))}
        gone: list[tuple[str, str]] = []
        keep_hosts: set[str] = set()
        keep_clouds: set[str] = set()
        for r in conn.execute("SELECT vm_id, host, cloud FROM vms WHERE vault_id=? AND provider=?",
                              (vault_id, provider)).fetchall():
            if r["vm_id"] in vms:
                continue
            if r["vm_id"] in protected:
                conn.execute("UPDATE vms SET missing_since=? WHERE vault_id=? AND vm_id=? AND missing_since=0",
                             (now, vault_id, r["vm_id"]))
                keep_hosts.add(r["host"])
                keep_clouds.add(r["cloud"])
            else:
                gone.append((vault_id, r["vm_id"]))
        conn.executemany("DELETE FROM vms WHERE vault_id=? AND vm_id=?", gone)
        removed = len(gone)
        for table, seen, keep in (("hosts", hosts, keep_hosts), ("clouds", clouds, keep_clouds)):
            for r in conn.execute(f"SELECT name FROM {table} WHERE vault_id=? AND provider=?",
                                  (vault_id, provider)).fetchall():
                if r["name"] in seen:
                    continue
                if r["name"] in keep:
                    conn.execute(f"UPDATE {table} SET missing_since=? WHERE vault_id=? AND name=? AND missing_since=0",
                                 (now, vault_id, r["name"]))
                else:
                    conn.execute(f"DELETE FROM {table} WHERE vault_id=? AND name=?", (vault_id, r["name"]))
        return removed

    def reconcile(self, conn: Conn, vault_id: str, provider: str | None = None) -> None:
        """Tell the lifecycle which protected VMs' sources are missing or back: the VM is not
        reported (and why), its provider or its host's agent is no longer registered."""
        servers = {(r["role"], r["name"]) for r in conn.execute("SELECT role, name FROM servers WHERE vault_id=?",
                                                                (vault_id,))}
        for item in self.items.list_in(conn, vault_id):
            if provider is not None and item.provider != provider:
                continue
            vm = conn.execute("SELECT * FROM vms WHERE vault_id=? AND vm_id=?", (vault_id, item.vm_id)).fetchone()
            what = ""
            if ("provider", item.provider) not in servers:
                what = f"its provider {item.provider!r} is no longer registered in the vault"
            elif vm is None or vm["missing_since"]:
                cloud = conn.execute("SELECT missing_since FROM clouds WHERE vault_id=? AND name=?",
                                     (vault_id, item.cloud)).fetchone()
                if cloud is None or cloud["missing_since"]:
                    what = (f"its cloud {item.cloud!r} is no longer in provider {item.provider!r}'s configuration")
                else:
                    what = f"provider {item.provider!r} no longer reports the VM"
            elif ("agent", vm["host"]) not in servers:
                what = f"the agent of its host {vm['host']!r} is no longer registered in the vault"
            if what:
                self.items.source_missing(conn, item, what)
            elif item.source_missing:
                self.items.source_returned(conn, item)

    def clouds(self, vault_id: str) -> list[dict[str, object]]:
        out = []
        for c in self.db.query("SELECT * FROM clouds WHERE vault_id=? ORDER BY name", (vault_id,)):
            rows = self.hosts(vault_id, c["name"])
            n = self.db.one("SELECT count(*) AS n FROM vms WHERE vault_id=? AND cloud=?", (vault_id, c["name"]))
            out.append({"name": c["name"], "provider": c["provider"], "hosts": [h["name"] for h in rows],
                        "vms": n["n"] if n else 0, "missing_since": float(c["missing_since"]),
                        "networks": networks_of(c), "host_rows": rows})
        return out

    def cloud(self, vault_id: str, name: str) -> Row:
        row = self.db.one("SELECT * FROM clouds WHERE vault_id=? AND name=?", (vault_id, name))
        if row is None:
            raise NotFound(f"cloud {name!r} is not synced to this vault",
                           causes=("The provider has not synced yet, or its configuration marks the cloud"
                                   " sync = false.",),
                           action="List synced clouds with 'asr cloud list'.")
        return row

    def hosts(self, vault_id: str, cloud: str) -> list[Row]:
        return self.db.query("SELECT * FROM hosts WHERE vault_id=? AND cloud=? ORDER BY name", (vault_id, cloud))

    def vms(self, vault_id: str, cloud: str = "") -> list[Row]:
        if cloud:
            return self.db.query("SELECT * FROM vms WHERE vault_id=? AND cloud=? ORDER BY name", (vault_id, cloud))
        return self.db.query("SELECT * FROM vms WHERE vault_id=? ORDER BY name", (vault_id,))

    def find_vm(self, vault_id: str, ref: str) -> Row:
        rows = self.db.query("SELECT * FROM vms WHERE vault_id=? AND (name=? OR vm_id=?)", (vault_id, ref, ref))
        if not rows:
            raise NotFound(f"VM {ref!r} is not in this vault's inventory",
                           action="List VMs with 'asr vm list'; the provider syncs new VMs within seconds.")
        if len(rows) > 1:
            # a VM failed over site to site runs under its name on the recovery host too: the
            # name means the protected VM (the other copy is named by its id)
            protected = [r for r in rows if self.db.one("SELECT 1 FROM protected_items WHERE vault_id=? AND vm_id=?",
                                                         (vault_id, r["vm_id"])) is not None]
            if len(protected) == 1:
                return protected[0]
            ids = ", ".join(f"{r['vm_id']} on {r['host']}" for r in rows)
            raise UsageError(f"VM name {ref!r} is ambiguous ({ids})", action="Name the VM by its id.")
        return rows[0]


def networks_of(cloud: Row) -> list[str]:
    """The VM networks a cloud's provider configuration names (site to site maps them)."""
    return [str(n) for n in json.loads(cloud["networks"] or "[]")]


def parse_vm(row: Row) -> inventory_pb2.Vm:
    vm = inventory_pb2.Vm()
    vm.ParseFromString(row["spec"])
    return vm


def dumps_policy(p: inventory_pb2.Policy) -> str:
    return json.dumps(MessageToDict(p, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))


def loads_policy(text: str) -> inventory_pb2.Policy:
    """A saved policy; one saved before policies had a compression reads as the default."""
    p = ParseDict(json.loads(text), inventory_pb2.Policy())
    p.compression = p.compression or DEFAULT_COMPRESSION
    return p


__all__ = ["Inventory", "dumps_policy", "loads_policy", "networks_of", "parse_vm", "spec_to_vm", "vm_to_spec"]
