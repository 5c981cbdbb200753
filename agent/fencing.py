"""Fencing on the host: one active side per protected VM (docs/design.md, "Fencing on the host").

The vault advances a protected item's epoch whenever its active side changes. This host keeps,
per VM, the epoch it was granted (``agent.settings``: EnableReplication and a successful
Failback grant their command's epoch) and, once it learns it is stale, a fence marker in the
local hypervisor (``agent.hypervisor.fence``). The rules for commands about a VM
(:func:`apply`), where N is the command's epoch and M the one this host holds:

* N = 0 (not about a protected item's epoch) or no settings here: carried out as they are;
* N < M: refused with Fenced, "command from epoch N is older than this host's epoch M";
* EnableReplication, Failback: carried out; they grant N (their handlers do, Failback only
  after its blocks were written) and clear the fence;
* any other command with N > M: this host is stale. It is carried out (the unplanned
  failover's "try to shut the source down" PowerVm stop) and then the VM is fenced; a PowerVm
  start is not carried out (a stale copy must not run): the VM is fenced and the command
  fails with Fenced.

The replication engine fences a VM when the vault refuses it with Fenced (any replication
RPC, or CheckEpoch at start), and after a planned failover's final cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from asrerrors import Fenced, NotFound

if TYPE_CHECKING:
    from agent.hypervisor import LocalHypervisor
    from agent.runtime import AgentRuntime
    from asrpb import control_pb2

log = logging.getLogger("asr-agent.fencing")

VM_COMMANDS = frozenset({"enable_replication", "disable_replication", "power_vm", "replicate_now", "failback",
                         "reverse_replicate"})
GRANTING = frozenset({"enable_replication", "failback"})


def fence_vm(hv: LocalHypervisor, vm_name: str, vm_id: str, reason: str, epoch: int,
             newer_epoch: int = 0) -> dict[str, Any] | None:
    """Fence this host's copy of the VM (marker, power off) and log it at WARNING with the
    code ASR-0044; a VM fenced already keeps its marker. None when the VM is not here."""
    try:
        marker = hv.fenced(vm_name)
        if marker is not None:
            if hv.get(vm_name).power_state == "Running":
                hv.stop(vm_name)
            return marker
        marker = hv.fence(vm_name, reason, epoch, newer_epoch)
    except NotFound:
        return None
    log.warning("VM fenced: this host's copy is stale", extra={"fields": {
        "vm": vm_name, "vm_id": vm_id, "code": Fenced.code, "reason": marker.get("reason", reason),
        "epoch": epoch, "newer_epoch": newer_epoch}})
    return marker


def apply(rt: AgentRuntime, cmd: control_pb2.Command, run: Callable[[], str]) -> str:
    """Carry out ``cmd`` with ``run`` under the rules of the module doc."""
    kind = cmd.WhichOneof("body") or ""
    if kind not in VM_COMMANDS or not cmd.epoch:
        return run()
    body = getattr(cmd, kind)
    held = rt.settings.get(body.vm_id)
    name = held.vm_name if held is not None else body.vm_name
    if held is None or cmd.epoch == held.epoch or (kind in GRANTING and cmd.epoch > held.epoch):
        return run()
    if cmd.epoch < held.epoch:
        raise Fenced(f"VM {name}: {kind} command from epoch {cmd.epoch} is older than this host's epoch "
                     f"{held.epoch}; it was not carried out",
                     causes=("The command was made before the VM's active side changed, and delivered late.",),
                     action="Nothing to do on this host: the vault sends current commands with the current epoch.")
    reason = (f"a {kind} command carried epoch {cmd.epoch}, newer than this host's epoch {held.epoch}: "
              "the VM is active elsewhere")
    if kind == "power_vm" and body.action == "start":
        marker = _fence(rt, name, body.vm_id, reason, held.epoch, cmd.epoch)
        raise Fenced(f"VM {name} was not started: {marker.get('reason', reason) if marker else reason}")
    try:
        return run()
    finally:
        _fence(rt, name, body.vm_id, reason, held.epoch, cmd.epoch)


def _fence(rt: AgentRuntime, name: str, vm_id: str, reason: str, epoch: int, newer: int) -> dict[str, Any] | None:
    marker = fence_vm(rt.hv, name, vm_id, reason, epoch, newer)
    if rt.replication is not None:
        rt.replication.refresh()  # the VM leaves the schedule
    return marker


def grant(rt: AgentRuntime, vm_id: str, vm_name: str, epoch: int) -> None:
    """This host is the VM's active side from ``epoch`` on: hold it and clear the fence."""
    if epoch:
        rt.settings.grant(vm_id, epoch)
    try:
        if rt.hv.unfence(vm_name):
            log.info("VM unfenced: this host is the active side again",
                     extra={"fields": {"vm": vm_name, "vm_id": vm_id, "epoch": epoch}})
    except NotFound:
        pass
    if rt.replication is not None:
        rt.replication.granted(vm_id)
