"""The running agent's parts, shared by its command handlers.

Command handlers are registered by body name (the ``oneof body`` field of
``asr.v1.Command``): ``handler(runtime, command) -> output text``. A handler raises an
AsrError to fail the command; it must be idempotent, because delivery is at least once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.config import AgentConfig
from agent.hypervisor import LocalHypervisor
from agent.settings import Settings
from asrclock import Clock
from asrpb import control_pb2
from registration.link import CloudLink
from registration.state import SiteIdentity

Handler = Callable[["AgentRuntime", control_pb2.Command], str]
# Every command about a VM goes through agent.fencing.apply (epochs, the fence) first.


@dataclass
class AgentRuntime:
    config: AgentConfig
    ident: SiteIdentity
    clock: Clock
    hv: LocalHypervisor
    link: CloudLink
    settings: Settings
    stopping: threading.Event
    handlers: dict[str, Handler] = field(default_factory=dict)
    # Set by the replication engine when it starts (agent.replication), None before.
    replication: Any = None
    # The cycle counters (agent.metrics.CycleMetrics) the composition root made, or None.
    cycle_metrics: Any = None
    # Site-to-site: the recovery host's replicas (agent.replica.role.Replicas), None unless
    # replica_listen is set.
    replica: Any = None
    # Site-to-site re-protect: this host following a failover VM (agent.reverse), set by the
    # composition root.
    reverse: Any = None

    def handle(self, cmd: control_pb2.Command) -> str:
        kind = cmd.WhichOneof("body")
        fn = self.handlers.get(kind or "")
        if fn is None:
            from asrerrors import UsageError

            raise UsageError(f"this agent does not know the command {kind!r}",
                             action="Upgrade the agent to the cloud service's release.")
        from agent import fencing

        return fencing.apply(self, cmd, lambda: fn(self, cmd))
