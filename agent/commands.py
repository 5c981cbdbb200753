"""The agent's handlers for the commands its provider relays.

Each handler is idempotent. The agent also records every command it has applied in
STATE_DIR/commands/<id>.json (the result, written before the provider is told), so a
command delivered again is answered from there and not executed twice.
"""

from __future__ import annotations

import json
import os
from typing import Any

from agent import fencing
from agent.runtime import AgentRuntime
from asrerrors import NotFound, StateConflict, UsageError
from asrpb import control_pb2
from chunkfmt import DEFAULT_COMPRESSION
from durablefile import write_atomic


def configure_host(rt: AgentRuntime, cmd: control_pb2.Command) -> str:
    rt.settings.save_host_policy(cmd.configure_host)
    p = cmd.configure_host.policy
    return (f"host policy saved: copy every {p.copy_frequency_seconds}s, retention {p.retention_hours}h, "
            f"compression {p.compression or DEFAULT_COMPRESSION}")


def _vm_name(rt: AgentRuntime, vm_id: str, fallback: str) -> str:
    for vm in rt.hv.list():
        if vm.vm_id == vm_id:
            return vm.name
    raise NotFound(f"VM {fallback!r} ({vm_id}) is not on host {rt.ident.name}")


def enable_replication(rt: AgentRuntime, cmd: control_pb2.Command) -> str:
    body = cmd.enable_replication
    name = _vm_name(rt, body.vm_id, body.vm_name)
    rt.settings.enable(body, rt.clock.now(), epoch=cmd.epoch)
    fencing.grant(rt, body.vm_id, name, cmd.epoch)  # this host is the active side (again)
    if rt.replication is not None:
        rt.replication.refresh()
    return f"replication enabled for {body.vm_name}" + (f" (epoch {cmd.epoch})" if cmd.epoch else "")


def disable_replication(rt: AgentRuntime, cmd: control_pb2.Command) -> str:
    body = cmd.disable_replication
    rt.settings.disable(body.vm_id)
    if rt.replication is not None:
        rt.replication.refresh()
    if rt.reverse is not None and rt.reverse.stop(body.vm_id):
        return f"replication disabled for {body.vm_name}; its reverse replication stopped"
    return f"replication disabled for {body.vm_name}"


def power_vm(rt: AgentRuntime, cmd: control_pb2.Command) -> str:
    body = cmd.power_vm
    name = _vm_name(rt, body.vm_id, body.vm_name)
    if body.action == "start":
        rt.hv.start(name)
    elif body.action == "stop":
        rt.hv.stop(name)
    else:
        raise UsageError(f"unknown power action {body.action!r}; allowed: start, stop")
    return f"VM {name} {'started' if body.action == 'start' else 'stopped'}"


def accept_replica(rt: AgentRuntime, cmd: control_pb2.Command) -> str:
    """Site-to-site: hold a replica of a VM of another site, shipped only by its source host.
    Idempotent: the same pairing again keeps everything; another pairing id for the VM
    replaces the old one (its source is refused from then on), keeping the stored points."""
    body = cmd.accept_replica
    if rt.replica is None:
        raise StateConflict(f"host {rt.ident.name} does not hold replicas: replica_listen is not set in "
                            f"{rt.config.path}", action="Set replica_listen (and re-register with --address), "
                                                         "restart the agent, then pair again.")
    if not body.source_host or not body.pairing_id:
        raise UsageError("AcceptReplica needs a source host and a pairing id")
    if rt.replica.host.pairings.get(body.vm_id) is None:    # a new replica must fit (a redelivery holds it)
        rt.replica.host.check_room(body.vm_id, body.vm_name, [d.virtual_size for d in body.disks])
    pairing, replaced = rt.replica.host.pairings.accept(body, cmd.epoch, rt.clock.now())
    rt.replica.reporter.point_made(body.vm_id)   # tell the vault what is held, soon
    return (f"replica of {body.vm_name} accepted from {body.source_host} (pairing {body.pairing_id}"
            + (", replacing an earlier pairing" if replaced else "") + ")")


def release_replica(rt: AgentRuntime, cmd: control_pb2.Command) -> str:
    """Site-to-site: stop holding the replica (and delete its data when asked). Idempotent; a
    release naming an older pairing than the one held changes nothing."""
    body = cmd.release_replica
    if rt.replica is None:
        return f"host {rt.ident.name} holds no replicas"
    held = rt.replica.host.pairings.get(body.vm_id)
    if held is not None and body.pairing_id and held.pairing_id != body.pairing_id:
        return f"replica of {body.vm_name} is held for pairing {held.pairing_id}, not {body.pairing_id}: kept"
    rt.replica.release(body.vm_id, body.delete_data)
    return f"replica of {body.vm_name} released" + (" and its data deleted" if body.delete_data else "")


def _replicas(rt: AgentRuntime, what: str) -> Any:
    if rt.replica is None:
        raise StateConflict(f"host {rt.ident.name} holds no replicas (replica_listen is not set in {rt.config.path}): "
                            f"it cannot {what}", action="Fail over on the VM's recovery host (asr vm show).")
    return rt.replica


def replica_failover(rt: AgentRuntime, cmd: control_pb2.Command) -> str:
    """Site-to-site: make (and start) a VM of a replica on this recovery host."""
    return str(_replicas(rt, "fail a VM over").failovers.failover(cmd.replica_failover, cmd.epoch))


def replica_cleanup(rt: AgentRuntime, cmd: control_pb2.Command) -> str:
    """Site-to-site: stop or delete a VM a failover made of a replica here."""
    return str(_replicas(rt, "clean a failover up").failovers.cleanup(cmd.replica_cleanup))


def register_builtin(rt: AgentRuntime) -> None:
    rt.handlers.update(configure_host=configure_host, enable_replication=enable_replication,
                       disable_replication=disable_replication, power_vm=power_vm,
                       accept_replica=accept_replica, release_replica=release_replica,
                       replica_failover=replica_failover, replica_cleanup=replica_cleanup)


class AppliedLog:
    """Results of commands this agent applied, one file each (STATE_DIR/commands/)."""

    def __init__(self, state_dir: str) -> None:
        self.dir = os.path.join(state_dir, "commands")
        os.makedirs(self.dir, exist_ok=True)

    def get(self, command_id: str) -> control_pb2.CommandResult | None:
        try:
            with open(os.path.join(self.dir, f"{command_id}.json")) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return None
        return control_pb2.CommandResult(id=command_id, ok=doc["ok"], error_code=doc["error_code"],
                                          error_message=doc["error_message"], output=doc["output"])

    def put(self, result: control_pb2.CommandResult, kind: str, applied_at: float) -> None:
        doc = {"ok": result.ok, "error_code": result.error_code, "error_message": result.error_message,
               "output": result.output, "kind": kind, "applied_at": applied_at}
        write_atomic(os.path.join(self.dir, f"{result.id}.json"), json.dumps(doc).encode())
