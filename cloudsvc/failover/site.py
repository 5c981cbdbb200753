"""Failover of VMs protected site to site (issue 11): the vault orchestrates, the recovery host
makes and runs the VM (``agent.replica.failover``), and no disk byte passes the cloud.

The operations and the lifecycle are the vault-target ones (``operations``); what differs is
where a step runs. A ``REPLICA`` step is a command to the *recovery* host's provider:

=================  ==============================================================================
action             command
=================  ==============================================================================
``failover``       ReplicaFailover: a VM of the point (``rkind`` test or failover), NICs on the
                   mapped networks (a test: the network chosen, or none); a change of point
                   replaces the VM made before
``delete``         ReplicaCleanup delete: the VM goes (a failover VM that ran on the replica
                   disks re-arms the replica)
``stop``/``start`` ReplicaCleanup stop/start: failback shuts it down first (and a failed failback
                   starts it again)
``release``        ReleaseReplica with its data (vault teardown); a failover VM keeps its disks
=================  ==============================================================================

A planned failover's final point commits on the recovery host, which the vault never sees:
the vault moves the active side (``ProtectedItems.final_point``, epoch + 1) in the transaction
that queues the ReplicaFailover of that point, after the primary acknowledged the point
(REPLICATE step done) and before the recovery host starts the VM, which holds the new epoch
from then on and fences any session of the old one. Failback fetches the blocks from the
recovery host (``Failback.replica_source``), not from the cloud.
"""

from __future__ import annotations

from typing import Any

from asrerrors import NotFound, StateConflict
from asrpb import control_pb2, failover_pb2
from cloudsvc.failover.steps import Step
from cloudsvc.inventory import Inventory, networks_of
from cloudsvc.lifecycle import FINAL_POINT_STATES, Item, ItemState, ProtectedItems, Side
from cloudsvc.replicas import Replicas
from cloudsvc.sitetosite import SiteToSite
from metastore.database import Conn, Database, Row

TEST_SUFFIX = "-test"


class SiteFailover:
    def __init__(self, db: Database, inventory: Inventory, items: ProtectedItems, site: SiteToSite,
                 replicas: Replicas) -> None:
        self.db = db
        self.inventory = inventory
        self.items = items
        self.site = site
        self.replicas = replicas

    # ---- before the job --------------------------------------------------------------------------
    def vm_info(self, vault_id: str, item: Item, row: Row, nics: list[str]) -> dict[str, Any]:
        """What the job's context keeps of a site-to-site VM (nothing is looked up later)."""
        host = self.db.one("SELECT provider, replica_address FROM hosts WHERE vault_id=? AND name=?",
                           (vault_id, item.recovery_host))
        if host is None:
            raise NotFound(f"recovery host {item.recovery_host!r} of VM {item.name!r} is no longer in the inventory",
                           action="Bring the recovery site's provider back (its host must be synced).")
        return {"s2s": True, "recovery_host": item.recovery_host, "recovery_cloud": item.recovery_cloud,
                "recovery_provider": host["provider"], "replica_address": host["replica_address"],
                "pairing_id": item.pairing_id, "source_cloud": row["cloud"], "nic_networks": nics}

    def networks(self, vault_id: str, v: dict[str, Any], make: str, req: failover_pb2.FailoverRequest) -> list[str]:
        """The recovery network of each NIC: a failover maps each (an unmapped one is refused,
        naming it); a test failover puts them all on the network chosen, or none."""
        if make == "test":
            chosen = "" if req.network in ("", "none") else req.network
            if chosen:
                nets = networks_of(self.inventory.cloud(vault_id, v["recovery_cloud"]))
                if chosen not in nets:
                    raise NotFound(f"network {chosen!r} is not a VM network of recovery cloud "
                                   f"{v['recovery_cloud']!r} (its networks: {', '.join(nets) or 'none'})",
                                   action="Name one of them with --network, or none.")
            return [chosen for _ in v["nic_networks"]]
        self.site.check_mapped(vault_id, v["name"], v["source_cloud"], v["recovery_cloud"], v["nic_networks"])
        mapped = {m.primary_network: m.recovery_network for m in self.site.mappings(vault_id)
                  if m.primary_cloud == v["source_cloud"] and m.recovery_cloud == v["recovery_cloud"]}
        return [mapped.get(n, "") if n else "" for n in v["nic_networks"]]

    def check_point(self, vault_id: str, v: dict[str, Any], spec: str) -> None:
        """A point named by the operator must be one the recovery host reported."""
        points = self.replicas.points(vault_id, v["vm_id"])
        if not points:
            raise NotFound(f"the recovery host {v['recovery_host']} has reported no point of VM {v['name']} yet",
                           action="Wait for the first copy (asr vm show: replica points).")
        if spec == "latest-app-consistent" and not any(p.app_consistent for p in points):
            raise NotFound(f"VM {v['name']} has no app-consistent point on {v['recovery_host']}")
        if spec not in ("", "latest", "latest-app-consistent") and all(p.point_id != spec for p in points):
            raise NotFound(f"point {spec} is not a point of VM {v['name']} on {v['recovery_host']}",
                           action=f"List them with 'asr point list {v['name']}'.")

    # ---- commands of the steps ------------------------------------------------------------------------
    def command(self, conn: Conn, vault_id: str, vm: dict[str, Any], step: Step, point: str
                ) -> tuple[control_pb2.Command, int]:
        """The command of a REPLICA step (to the recovery host's provider) and its epoch."""
        item = self._item(conn, vault_id, vm)
        if step.action == "failover":
            if step.rkind == "failover" and item.state in FINAL_POINT_STATES and item.location == Side.PRIMARY:
                self.items.final_point(conn, item, point)      # see the module doc
                item = self._item(conn, vault_id, vm)
            name = vm["name"] + (TEST_SUFFIX if step.rkind == "test" else "")
            body = control_pb2.ReplicaFailover(
                host=vm["recovery_host"], vm_id=vm["vm_id"], vm_name=vm["name"], pairing_id=vm["pairing_id"],
                point_id=point, kind=step.rkind, name=name, networks=vm["networks"],
                cpus=vm["cpus"], memory_mb=vm["memory_mb"], guest_os=vm.get("guest_os", ""),
                generation=vm.get("generation", 1), start=True)
            return control_pb2.Command(replica_failover=body), item.epoch
        if step.action == "release":   # vault teardown (cloudsvc.teardown)
            return control_pb2.Command(release_replica=control_pb2.ReleaseReplica(
                host=vm["recovery_host"], vm_id=vm["vm_id"], vm_name=vm["name"], pairing_id=vm["pairing_id"],
                delete_data=True)), item.epoch
        cleanup = control_pb2.ReplicaCleanup(host=vm["recovery_host"], vm_id=vm["vm_id"], vm_name=vm["name"],
                                             pairing_id=vm["pairing_id"], kind=step.rkind, action=step.action)
        return control_pb2.Command(replica_cleanup=cleanup), item.epoch

    def failback(self, vm: dict[str, Any]) -> control_pb2.Failback:
        """Failback of a site-to-site VM: the primary fetches the blocks from the recovery host —
        after a re-protect only those written since its last sync."""
        return control_pb2.Failback(
            host=vm["host"], vm_id=vm["vm_id"], vm_name=vm["name"], session_id=f"{vm['vm_id']}/{vm['pairing_id']}",
            start_vm=True, replica_source=self._source(vm),
            incremental=vm.get("prev") == ItemState.REVERSE_PROTECTED)

    def reverse_command(self, vm: dict[str, Any], item: Item, action: str) -> control_pb2.Command:
        """Re-protect: the primary keeps its copy following the failover VM (``agent.reverse``)."""
        return control_pb2.Command(reverse_replicate=control_pb2.ReverseReplicate(
            host=vm["host"], vm_id=vm["vm_id"], vm_name=vm["name"], source=self._source(vm), action=action,
            interval_seconds=item.policy.copy_frequency_seconds or 300))

    @staticmethod
    def _source(vm: dict[str, Any]) -> control_pb2.ReplicaTarget:
        return control_pb2.ReplicaTarget(recovery_host=vm["recovery_host"], address=vm["replica_address"],
                                         pairing_id=vm["pairing_id"])

    def replica_target(self, conn: Conn, vault_id: str, item: Item) -> control_pb2.ReplicaTarget:
        """The replica target a grant (EnableReplication) gives the primary back."""
        host = conn.execute("SELECT replica_address FROM hosts WHERE vault_id=? AND name=?",
                            (vault_id, item.recovery_host)).fetchone()
        return control_pb2.ReplicaTarget(recovery_host=item.recovery_host,
                                         address=host["replica_address"] if host else "",
                                         pairing_id=item.pairing_id)

    def restart_command(self, vm: dict[str, Any]) -> control_pb2.Command:
        """A failed failback: the failover VM it shut down runs again."""
        return control_pb2.Command(replica_cleanup=control_pb2.ReplicaCleanup(
            host=vm["recovery_host"], vm_id=vm["vm_id"], vm_name=vm["name"], pairing_id=vm["pairing_id"],
            kind="failover", action="start"))

    def _item(self, conn: Conn, vault_id: str, vm: dict[str, Any]) -> Item:
        item = self.items.get(vault_id, vm["vm_id"], conn)
        if item is None:
            raise StateConflict(f"VM {vm['name']} is no longer protected")
        return item
