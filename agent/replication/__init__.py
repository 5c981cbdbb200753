"""The agent's replication engine (see ``engine`` for the schedule, ``cycle`` for the data
path). The agent daemon calls :func:`start` after start-up and ``runtime.replication.stop()``
at shutdown; :func:`start` also registers the ``replicate_now`` command handler."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agent.replication.engine import Engine
from agent.replication.throttle import Throttle, describe

if TYPE_CHECKING:
    from agent.runtime import AgentRuntime
    from asrpb import control_pb2

__all__ = ["Engine", "start"]
log = logging.getLogger(__name__)


def replicate_now(runtime: AgentRuntime, cmd: control_pb2.Command) -> str:
    """ReplicateNow: one cycle now (after shutting the VM down when asked); the output is the
    committed point id. Idempotent: a repeated delivery commits another point at most."""
    body = cmd.replicate_now
    res = runtime.replication.replicate(body.vm_id, shutdown_first=body.shutdown_first)
    return str(res.point_id)


def start(runtime: AgentRuntime) -> Engine:
    # imported here: agent.replica.channel builds on this package's cycle module
    from agent.replica.channel import ReplicaChannels

    schedule = runtime.config.bandwidth
    log.info("upload limits", extra={"fields": describe(schedule)})
    engine = Engine(runtime.hv, runtime.settings, runtime.link.channel, runtime.link.target,
                    runtime.ident.vault_id, runtime.clock, runtime.ident.state_dir,
                    bulk_channel=runtime.link.bulk_channel, metrics=runtime.cycle_metrics,
                    throttle=Throttle(schedule, runtime.clock) if schedule is not None else None,
                    replica_channels=ReplicaChannels(runtime.ident, runtime.config.proxy))
    runtime.replication = engine
    runtime.handlers["replicate_now"] = replicate_now
    engine.start()
    return engine
