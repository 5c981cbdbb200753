"""Site to site (issue 11): which clouds may be paired, network mappings, and where a VM's
replica goes. The only writer of the ``network_mappings`` table.

A VMM cloud of one provider is paired with a cloud of **another** provider of the same vault
(its policy's ``target_cloud``); the disk data then goes host to host and the vault keeps
metadata only. Pairing needs a recovery cloud with at least one host whose agent holds
replicas (it reports a ``replica_address``).

A **network mapping** sends a VM network of the primary cloud to one of the recovery cloud:
both must be networks their provider configures for the cloud, and the clouds must be
paired. A VM whose NIC connects to an unmapped network is not protected (a NIC without a
network needs no mapping).

**Placement** picks the recovery host: the host of the recovery cloud that holds replicas
with the most free space, which must be at least the VM's total virtual disk size (ties go
to the first by name, so the choice is repeatable). The operator may name the host instead;
it must be such a host of the recovery cloud with room for the VM.
"""

from __future__ import annotations

from dataclasses import dataclass

from asrclock import Clock
from asrerrors import AlreadyExists, NetworkNotMapped, NoRecoveryHost, NotFound, PairingRefused, StateConflict
from asrpb import inventory_pb2
from cloudsvc.events import MAPPING_CHANGED, Events, Severity
from cloudsvc.inventory import Inventory, loads_policy, networks_of, parse_vm
from metastore.database import Database, Row

ONPREM_TO_ONPREM = "onprem-to-onprem"   # the billing scenario of a VM protected to a target cloud
ONPREM_TO_CLOUD = "onprem-to-cloud"


@dataclass(frozen=True)
class Mapping:
    primary_cloud: str
    primary_network: str
    recovery_cloud: str
    recovery_network: str
    created_at: float


def gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


class SiteToSite:
    def __init__(self, db: Database, clock: Clock, inventory: Inventory, events: Events) -> None:
        self.db = db
        self.clock = clock
        self.inventory = inventory
        self.events = events

    # ---- pairing --------------------------------------------------------------------------------
    def check_pairing(self, vault_id: str, cloud: Row, target: str) -> Row:
        """The recovery cloud ``target`` when ``cloud`` may be paired with it; else the reason."""
        name = str(cloud["name"])
        if target == name:
            raise PairingRefused(f"cloud {name!r} cannot be paired with itself",
                                 action="Name a cloud of another provider with --target-cloud.")
        try:
            row = self.inventory.cloud(vault_id, target)
        except NotFound:
            raise NotFound(f"target cloud {target!r} is not synced to this vault",
                           causes=("The name is mistyped, or the recovery site's provider has not synced it "
                                   "(or its configuration marks it sync = false).",),
                           action="List synced clouds with 'asr cloud list'.") from None
        if row["missing_since"]:
            raise PairingRefused(f"target cloud {target!r} is no longer in provider {row['provider']!r}'s "
                                 "configuration", action="Add it back to that provider's configuration first.")
        if row["provider"] == cloud["provider"]:
            raise PairingRefused(
                f"clouds {name!r} and {target!r} are both served by provider {cloud['provider']!r}; site to site "
                "pairs a cloud with a cloud of another provider",
                action="Name a recovery cloud of the recovery site's provider (asr cloud list shows providers).")
        hosts = self.inventory.hosts(vault_id, target)
        if not any(h["replica_address"] for h in hosts):
            listed = ", ".join(h["name"] for h in hosts) or "none"
            raise PairingRefused(
                f"no host of target cloud {target!r} holds replicas (hosts: {listed})",
                causes=("No agent of the cloud's hosts sets replica_listen in its agent.toml, or none has "
                        "reported since.",),
                action="Set replica_listen (and replica_dir) in a recovery host's agent.toml, restart its agent, "
                       "and save the policy again.")
        return row

    def target_of(self, vault_id: str, cloud: str) -> str:
        """The recovery cloud a cloud is paired with ("" when its policy targets storage or it has none)."""
        row = self.db.one("SELECT policy FROM policies WHERE vault_id=? AND cloud=?", (vault_id, cloud))
        return loads_policy(row["policy"]).target_cloud if row else ""

    # ---- network mappings ----------------------------------------------------------------------
    def create_mapping(self, vault_id: str, m: Mapping) -> Mapping:
        primary = self.inventory.cloud(vault_id, m.primary_cloud)
        recovery = self.inventory.cloud(vault_id, m.recovery_cloud)
        for row, net in ((primary, m.primary_network), (recovery, m.recovery_network)):
            nets = networks_of(row)
            if net not in nets:
                raise NotFound(f"network {net!r} is not a VM network of cloud {row['name']!r} "
                               f"(its networks: {', '.join(nets) or 'none'})",
                               causes=(f"Provider {row['provider']!r}'s configuration lists the cloud's networks "
                                       "(networks = [...] in its [[clouds]] table).",),
                               action="Name a network the cloud has (asr cloud list), or add it to the provider's "
                                      "configuration.")
        paired = self.target_of(vault_id, m.primary_cloud)
        if paired != m.recovery_cloud:
            why = f"it is paired with {paired!r}" if paired else "it is not paired with any cloud"
            raise PairingRefused(
                f"cloud {m.primary_cloud!r} is not paired with {m.recovery_cloud!r} ({why}); networks are mapped "
                "between paired clouds",
                action=f"Pair them first: asr cloud protect {m.primary_cloud} --target-cloud {m.recovery_cloud}")
        now = self.clock.now()
        with self.db.write() as conn:
            old = conn.execute("SELECT recovery_cloud, recovery_network FROM network_mappings WHERE vault_id=? AND"
                               " primary_cloud=? AND primary_network=?",
                               (vault_id, m.primary_cloud, m.primary_network)).fetchone()
            if old is not None:
                raise AlreadyExists(
                    f"network {m.primary_network!r} of cloud {m.primary_cloud!r} is already mapped to "
                    f"{old['recovery_network']!r} of cloud {old['recovery_cloud']!r}",
                    action="Delete that mapping first (asr network-mapping delete).")
            conn.execute("INSERT INTO network_mappings(vault_id, primary_cloud, primary_network, recovery_cloud,"
                         " recovery_network, created_at) VALUES (?,?,?,?,?,?)",
                         (vault_id, m.primary_cloud, m.primary_network, m.recovery_cloud, m.recovery_network, now))
            self.events.record(conn, vault_id, Severity.INFO, MAPPING_CHANGED,
                               f"network {m.primary_cloud}/{m.primary_network} mapped to "
                               f"{m.recovery_cloud}/{m.recovery_network}")
        return Mapping(m.primary_cloud, m.primary_network, m.recovery_cloud, m.recovery_network, now)

    def mappings(self, vault_id: str) -> list[Mapping]:
        return [Mapping(r["primary_cloud"], r["primary_network"], r["recovery_cloud"], r["recovery_network"],
                        float(r["created_at"]))
                for r in self.db.query("SELECT * FROM network_mappings WHERE vault_id=? ORDER BY primary_cloud,"
                                       " primary_network", (vault_id,))]

    def delete_mapping(self, vault_id: str, primary_cloud: str, primary_network: str) -> None:
        """Delete a mapping no protected VM needs: failover connects each NIC to its mapped
        network, so a mapping a protected VM's NIC uses is refused, naming the VMs."""
        users = [vm.name for vm in self._site_vms(vault_id, "cloud", primary_cloud)
                 if any(n.network == primary_network for n in vm.nics)]
        if users:
            raise StateConflict(f"network {primary_network!r} of cloud {primary_cloud!r} is used by "
                                f"{len(users)} protected VM(s): {', '.join(users[:10])}",
                                causes=("Failover connects their NICs to the mapped network.",),
                                action="Disable their protection first; the mapping can be deleted once no "
                                       "protected VM uses the network.")
        with self.db.write() as conn:
            cur = conn.execute("DELETE FROM network_mappings WHERE vault_id=? AND primary_cloud=? AND"
                               " primary_network=?", (vault_id, primary_cloud, primary_network))
            if not cur.rowcount:
                raise NotFound(f"network {primary_network!r} of cloud {primary_cloud!r} is not mapped",
                               action="List the mappings with 'asr network-mapping list'.")
            self.events.record(conn, vault_id, Severity.INFO, MAPPING_CHANGED,
                               f"mapping of network {primary_cloud}/{primary_network} deleted")

    def check_mapped(self, vault_id: str, vm_name: str, cloud: str, target: str, networks: list[str]) -> None:
        """Raise NetworkNotMapped naming every network of ``networks`` with no mapping to ``target``."""
        mapped = {m.primary_network for m in self.mappings(vault_id)
                  if m.primary_cloud == cloud and m.recovery_cloud == target}
        missing = sorted({n for n in networks if n and n not in mapped})
        if missing:
            raise NetworkNotMapped(
                f"VM {vm_name!r} connects to network {', '.join(repr(n) for n in missing)} of cloud {cloud!r}, "
                f"which is not mapped to a network of recovery cloud {target!r}",
                details=[f"network {n}: no mapping" for n in missing],
                action=f"Map it first: asr network-mapping create --primary-cloud {cloud} --primary-network "
                       f"{missing[0]} --recovery-cloud {target} --recovery-network NAME")

    # ---- placement -----------------------------------------------------------------------------
    def reserved(self, vault_id: str, host: str) -> int:
        """Bytes the replicas already placed on ``host`` will still take: for each, its disks'
        virtual size less what its recovery host reported storing. The host's reported free
        space does not count them yet (a replica fills as its first copy arrives), so two VMs
        placed between two reports must not both count on the same free space."""
        stored = {str(r["vm_id"]): int(r["n"]) for r in self.db.query(
            "SELECT vm_id, sum(stored_bytes) AS n FROM replica_points WHERE vault_id=? AND host=? GROUP BY vm_id",
            (vault_id, host))}
        return sum(max(0, sum(int(d.virtual_size) for d in vm.disks) - stored.get(vm.vm_id, 0))
                   for vm in self._site_vms(vault_id, "recovery_host", host))

    def _site_vms(self, vault_id: str, column: str, value: str) -> list[inventory_pb2.Vm]:
        """The inventory of the VMs protected site to site whose item has ``column`` = ``value``."""
        assert column in ("cloud", "recovery_host")
        return [parse_vm(r) for r in self.db.query(
            "SELECT v.spec FROM protected_items p JOIN vms v ON v.vault_id=p.vault_id AND v.vm_id=p.vm_id"
            f" WHERE p.vault_id=? AND p.{column}=? AND p.recovery_host != '' ORDER BY v.name", (vault_id, value))]

    def place(self, vault_id: str, target: str, vm_name: str, needed: int, chosen: str = "") -> Row:
        """The recovery host for a VM needing ``needed`` bytes (its disks' virtual sizes), by
        each host's reported free space less what is reserved for replicas placed there."""
        hosts = self.inventory.hosts(vault_id, target)
        holding = [h for h in hosts if h["replica_address"] and not h["missing_since"]]
        free = {str(h["name"]): int(h["replica_free_bytes"]) - self.reserved(vault_id, str(h["name"]))
                for h in holding}
        if chosen:
            row = next((h for h in hosts if h["name"] == chosen), None)
            if row is None:
                raise NoRecoveryHost(f"host {chosen!r} is not in recovery cloud {target!r} "
                                     f"(its hosts: {', '.join(h['name'] for h in hosts) or 'none'})",
                                     action="Name a host of the recovery cloud (asr cloud list).")
            if not row["replica_address"] or row["missing_since"]:
                raise NoRecoveryHost(f"host {chosen!r} of cloud {target!r} holds no replicas (its agent reports no "
                                     "replica_listen)",
                                     action="Set replica_listen in that host's agent.toml, or name a host that "
                                            "holds replicas.")
            if free[chosen] < needed:
                raise NoRecoveryHost(f"recovery host {chosen!r} has {gib(max(0, free[chosen]))} free (after the "
                                     f"replicas placed there); VM {vm_name!r} needs {gib(needed)} ({needed} bytes)")
            return row
        if not holding:
            raise NoRecoveryHost(f"no host of recovery cloud {target!r} holds replicas")
        best = sorted(holding, key=lambda h: (-free[str(h["name"])], str(h["name"])))[0]
        room = free[str(best["name"])]
        if room < needed:
            raise NoRecoveryHost(
                f"no recovery host of cloud {target!r} has room for VM {vm_name!r}: it needs {gib(needed)} "
                f"({needed} bytes); the most free is {gib(max(0, room))} ({max(0, room)} bytes) on {best['name']}",
                details=[f"{h['name']}: {int(h['replica_free_bytes'])} bytes free, "
                         f"{int(h['replica_free_bytes']) - free[str(h['name'])]} reserved for replicas placed there"
                         for h in holding])
        return best

    def require_not_in_use(self, vault_id: str, cloud: str) -> None:
        """A cloud whose VMs are protected keeps its pairing (re-pairing would strand replicas)."""
        n = self.db.one("SELECT count(*) AS n FROM protected_items WHERE vault_id=? AND cloud=? AND"
                        " recovery_host != ''", (vault_id, cloud))
        if n is not None and n["n"]:
            raise StateConflict(f"cloud {cloud!r} has {n['n']} VMs protected site to site; its recovery cloud "
                                "cannot change while they are",
                                action="Disable their protection first (asr vm unprotect).")
