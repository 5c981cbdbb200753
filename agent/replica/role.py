"""What the agent's composition root (``agent.daemon``) made of the recovery host's role."""

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
    """The recovery host's parts, as ``AgentRuntime.replica``."""

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
