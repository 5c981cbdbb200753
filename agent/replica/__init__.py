"""Site-to-site replication (issue 11), the recovery host's side: it holds replicas of VMs
whose primary is a host of another provider of the same vault, and serves the primaries'
cycles directly (docs/design.md, "Site-to-site data path").

Parts: ``pairings`` (which host may ship which VM here), ``store`` (the replicas: the vault
store's format per VM, point records, retention), ``disks`` (the latest point applied to VHDX
files), ``applier`` (the thread that brings the disks to each new point after the commit
was answered), ``service`` and ``replica_api`` (the Replication subset a cycle uses, with per-VM
authorisation), ``failover`` (VMs made of a replica, and the blocks a failback fetches),
``reporter`` (ReportReplica to the vault), and ``channel`` (the primary's side:
channels to recovery hosts). ``agent.daemon`` assembles them when ``replica_listen`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from agent.replica.applier import Applier
from agent.replica.failover import ReplicaFailovers
from agent.replica.reporter import Reporter
from agent.replica.service import ReplicaService
from agent.replica.store import ReplicaHost


@dataclass
class Replicas:
    """What the composition root made of the recovery host's role (``AgentRuntime.replica``)."""

    host: ReplicaHost
    service: ReplicaService
    server: grpc.Server
    port: int
    reporter: Reporter
    applier: Applier
    failovers: ReplicaFailovers

    def release(self, vm_id: str, delete_data: bool = False) -> None:
        """Stop holding a replica: its test VM goes, a failover VM made of it keeps its disks."""
        self.host.release(vm_id, delete_data, keep=self.failovers.release(vm_id))
