"""Failover operations: each asks the lifecycle (``cloudsvc.lifecycle``) whether it may start
for every VM it names, checks everything it can before any job exists (points, keys,
networks), then in one transaction moves the items to their in-progress states and creates
one job whose typed steps (``steps``) the :class:`~cloudsvc.failover.runner.Runner` carries
out.

A job's context holds everything needed to carry it on after a restart (nothing lives only in
memory) except the customer-managed key, which is never stored: a job that still needs it
after the cloud service restarted fails cleanly and asks for the key again.

Plans: the shutdown stage for all VMs first, then for each group in order its "before"
actions, its VMs (in parallel), its "after" actions.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asrclock import Clock
from asrerrors import EncryptionKeyError, StateConflict, UsageError
from asrops.environment import seconds
from asrpb import control_pb2, failover_pb2
from chunkfmt import CustomerKey, vault_id_key
from chunkfmt.customerkey import KEY_FILE_FORMAT, KEY_FILE_VERSION
from cloudsvc.commands import Commands
from cloudsvc.failover.materialise import check_key
from cloudsvc.failover.plans import Plans
from cloudsvc.failover.recovered import Recovered, size_for
from cloudsvc.failover.site import SiteFailover
from cloudsvc.failover.steps import Stages, Step, StepKind
from cloudsvc.inventory import Inventory, parse_vm
from cloudsvc.jobs import Jobs
from cloudsvc.lifecycle import ItemState, Op, ProtectedItems, refusal, transition
from cloudsvc.replication import Replication
from cloudsvc.vaults import VaultRow
from metastore.database import Conn, Database, Row


@dataclass(frozen=True)
class OpSpec:
    op: Op              # the lifecycle operation
    kind: str           # job kind


OPS: dict[str, OpSpec] = {
    "test": OpSpec(Op.TEST_FAILOVER, "TestFailover"),
    "test-complete": OpSpec(Op.TEST_COMPLETE, "TestFailoverCleanup"),
    "planned": OpSpec(Op.PLANNED_FAILOVER, "PlannedFailover"),
    "unplanned": OpSpec(Op.UNPLANNED_FAILOVER, "UnplannedFailover"),
    "commit": OpSpec(Op.COMMIT, "CommitFailover"),
    "cancel": OpSpec(Op.CANCEL, "CancelFailover"),
    "change-point": OpSpec(Op.CHANGE_POINT, "ChangeRecoveryPoint"),
    "failback": OpSpec(Op.FAILBACK, "Failback"),
    "migrate": OpSpec(Op.MIGRATE, "Migrate"),
    "reprotect": OpSpec(Op.REPROTECT, "Reprotect"),
}
KINDS = tuple(sorted({o.kind for o in OPS.values()}))
SHUTDOWN_TIMEOUT_S = seconds("ASR_FAILOVER_SHUTDOWN_TIMEOUT")
GRANT_TIMEOUT_S = seconds("ASR_FAILOVER_GRANT_TIMEOUT")
POINT_OPS = ("test", "unplanned", "change-point")     # operations that take --point
MAKES_VMS = ("test", "planned", "unplanned", "change-point", "migrate")


@dataclass
class Target:
    """The VMs an operation acts on, in plan groups (one group for a single VM)."""

    name: str
    groups: list[dict[str, Any]] = field(default_factory=list)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)


class Operations:
    def __init__(self, db: Database, clock: Clock, inventory: Inventory, items: ProtectedItems, jobs: Jobs,
                 commands: Commands, replication: Replication, recovered: Recovered, plans: Plans,
                 site: SiteFailover) -> None:
        self.db = db
        self.clock = clock
        self.inventory = inventory
        self.items = items
        self.jobs = jobs
        self.commands = commands
        self.replication = replication
        self.recovered = recovered
        self.plans = plans
        self.site = site
        # the job runner's wake (the composition root wires it): a new job starts at once
        self.wake: Callable[[], None] = lambda: None
        # the job runner's claim (wired likewise): a job runs in the process that made it while
        # that process lives (several cloud services: ``cloudsvc.leases``). A job given a
        # customer key must: this process is the only one that has the key; any other starts
        # at once, without waiting for another process's next turn.
        self.claim: Callable[[Conn, str], None] = lambda conn, job_id: None
        # job id -> customer key, in memory only (never stored; see module doc)
        self.keys: dict[str, CustomerKey] = {}
        for kind in KINDS:
            jobs.hooks[kind] = self.job_done

    # ---- targets and checks -----------------------------------------------------------------
    def _vm_info(self, vault_id: str, vm_id: str) -> dict[str, Any]:
        row = self.inventory.find_vm(vault_id, vm_id)
        vm = parse_vm(row)
        item = self.items.get(vault_id, vm.vm_id)
        policy = item.policy if item else None
        info = {"vm_id": vm.vm_id, "name": vm.name, "host": row["host"], "provider": row["provider"],
                "storage": policy.storage if policy else "", "encrypt": bool(policy and policy.encrypt),
                "cpus": vm.cpus, "memory_mb": vm.memory_mb, "guest_os": vm.guest_os, "generation": vm.generation,
                "prev": item.state.value if item else ItemState.UNPROTECTED.value}
        if item is not None and item.site_to_site:
            info.update(self.site.vm_info(vault_id, item, row, [n.network for n in vm.nics]))
        return info

    def target(self, vault_id: str, req: failover_pb2.FailoverRequest) -> Target:
        if bool(req.vm) == bool(req.plan):
            raise UsageError("name exactly one VM or one recovery plan (--plan)")
        if req.vm:
            vm_id = str(self.inventory.find_vm(vault_id, req.vm)["vm_id"])
            groups: list[dict[str, Any]] = [{"number": 1, "vms": [vm_id], "actions": []}]
            name = req.vm
        else:
            groups = self.plans.groups(vault_id, req.plan)
            name = req.plan
        t = Target(name, groups)
        for g in groups:
            for vm_id in g["vms"]:
                t.vms[vm_id] = self._vm_info(vault_id, vm_id)
        if not t.vms:
            raise UsageError(f"recovery plan {name!r} has no VMs")
        return t

    def _check_allowed(self, t: Target, op: Op) -> None:
        refused = []
        for v in t.vms.values():
            state = ItemState(v["prev"])
            if transition(op, state) is None:
                err = refusal(v["name"], op.value, state, site_to_site=bool(v.get("s2s")))
                if len(t.vms) == 1:
                    raise err
                refused.append(f"{err} {' '.join(err.causes)}")
        if refused:
            raise StateConflict(f"{op.value} is not allowed for {t.name!r}", details=refused,
                                causes=("Another operation is in progress, or a VM is in another state.",),
                                action="Run one of the allowed operations, or wait for the running job.")

    def _check_points(self, vault_id: str, t: Target, key: CustomerKey | None, spec: str, chosen: bool) -> None:
        """Refuse a point that does not exist (``chosen``: the operation fails over to it), or a
        missing or wrong key, now: before any job or file exists."""
        for v in t.vms.values():
            if v.get("s2s"):
                self.site.check_point(vault_id, v, spec)
                continue
            if not (chosen or v["encrypt"] or key is not None):
                continue
            store, p = self.replication.choose_point(vault_id, v["vm_id"], v["storage"], spec, v["name"])
            if v["encrypt"] or key is not None:
                check_key(store, p, vault_id_key(vault_id), key)

    # ---- steps ------------------------------------------------------------------------------
    def _steps(self, op: str, t: Target, req: failover_pb2.FailoverRequest) -> list[Step]:
        s = Stages()

        def name(vm_id: str) -> str:
            return str(t.vms[vm_id]["name"])

        def s2s(vm_id: str) -> bool:
            return bool(t.vms[vm_id].get("s2s"))

        def make_vm(vm_id: str, title: str, point: str, rkind: str) -> None:
            if s2s(vm_id):   # on the recovery host (cloudsvc.failover.site)
                s.add(StepKind.REPLICA, f"{title} on {t.vms[vm_id]['recovery_host']}", vm_id, point=point,
                      rkind=rkind, action="failover")
            else:
                s.add(StepKind.MATERIALISE, title, vm_id, point=point, rkind=rkind)

        def delete_vm(vm_id: str, title: str, rkind: str) -> None:
            if s2s(vm_id):
                s.add(StepKind.REPLICA, f"{title} on {t.vms[vm_id]['recovery_host']}", vm_id, rkind=rkind,
                      action="delete")
            else:
                s.add(StepKind.DELETE_RECOVERED, title, vm_id, rkind=rkind)

        def groups(make: str, point: str) -> None:
            for g in t.groups:
                for a in g["actions"]:
                    if a["when"] == "before":
                        s.add(StepKind(a["kind"]), f"Group {g['number']}: {a['kind']} action {a['name']} (before)",
                              **_action(a))
                        s.next()
                for vm_id in g["vms"]:
                    make_vm(vm_id, f"Group {g['number']}: fail over {name(vm_id)}", point, make)
                s.next()
                for a in g["actions"]:
                    if a["when"] == "after":
                        s.add(StepKind(a["kind"]), f"Group {g['number']}: {a['kind']} action {a['name']} (after)",
                              **_action(a))
                        s.next()

        every = list(t.vms)
        if op == "test":
            groups("test", req.point or "latest")
        elif op == "test-complete":
            for v in every:
                delete_vm(v, f"Delete test VM of {name(v)}", "test")
        elif op == "planned":
            for v in every:
                s.add(StepKind.REPLICATE, f"Shut down {name(v)} and replicate its last changes", v)
            s.next()
            groups("failover", "replicated")
        elif op == "unplanned":
            for v in every:
                if t.vms[v]["prev"] == ItemState.TEST_CLEANUP_PENDING:
                    delete_vm(v, f"Delete test VM of {name(v)}", "test")
                if req.shutdown_source:
                    s.add(StepKind.POWER, f"Try to shut down {name(v)} on premises", v, action="stop", tolerant=True,
                          deadline_s=SHUTDOWN_TIMEOUT_S)
            s.next()
            groups("failover", req.point or "latest")
        elif op == "commit":
            for v in every:
                if t.vms[v]["prev"] == ItemState.FAILBACK_COMMIT_PENDING:
                    delete_vm(v, f"Delete the recovered VM of {name(v)}", "failover")
                else:
                    s.add(StepKind.COMMIT, f"Commit the failover of {name(v)}", v)
        elif op == "cancel":
            for v in every:
                delete_vm(v, f"Delete the recovered VM of {name(v)}", "failover")
            s.next()
            for v in every:
                s.add(StepKind.GRANT, f"Make {name(v)} on premises the active side again", v, tolerant=True,
                      deadline_s=GRANT_TIMEOUT_S)
            s.next()
            for v in every:
                s.add(StepKind.POWER, f"Start {name(v)} on premises", v, action="start", tolerant=True,
                      deadline_s=SHUTDOWN_TIMEOUT_S)
        elif op == "change-point":
            for v in every:   # a recovery host replaces its VM itself
                make_vm(v, f"Fail over {name(v)} from point {req.point or 'latest'}", req.point or "latest",
                        "failover")
            s.next()
            for v in every:
                if not s2s(v):
                    s.add(StepKind.DELETE_RECOVERED, f"Delete the previous recovered VM of {name(v)}", v,
                          rkind="failover", keep_own=True)
        elif op == "failback":
            for v in every:
                if s2s(v):
                    s.add(StepKind.REPLICA, f"Shut down the recovered VM of {name(v)} on "
                          f"{t.vms[v]['recovery_host']}", v, rkind="failover", action="stop")
                else:
                    s.add(StepKind.STOP_RECOVERED, f"Shut down the recovered VM of {name(v)}", v)
            s.next()
            for v in every:
                s.add(StepKind.FAILBACK, f"Fail back {name(v)}: ship the differing blocks and start it on premises", v)
        elif op == "reprotect":
            for v in every:
                s.add(StepKind.REVERSE, f"Re-protect {name(v)}: {t.vms[v]['host']} follows the VM on "
                      f"{t.vms[v]['recovery_host']} (first sync: every block compared by hash)", v, action="start")
        elif op == "migrate":
            for v in every:
                s.add(StepKind.REPLICATE, f"Shut down {name(v)} and replicate its last changes", v)
            s.next()
            for v in every:
                s.add(StepKind.MATERIALISE, f"Migrate {name(v)}", v, point="replicated", rkind="failover")
            s.next()
            for v in every:
                s.add(StepKind.DISABLE, f"Disable replication of {name(v)}", v, tolerant=True,
                      deadline_s=SHUTDOWN_TIMEOUT_S)
        return s.steps

    # ---- entry point ------------------------------------------------------------------------
    def start(self, vault: VaultRow, op_name: str, req: failover_pb2.FailoverRequest) -> str:
        if op_name == "planned" and req.direction == "to-primary":
            op_name = "failback"
        elif op_name == "planned" and req.direction not in ("", "to-recovery"):
            raise UsageError(f"--direction {req.direction!r} must be to-recovery or to-primary")
        spec = OPS[op_name]
        t = self.target(vault.id, req)
        self._check_allowed(t, spec.op)
        if req.point and op_name not in POINT_OPS:
            raise UsageError(f"--point is not used by {spec.op.value}")
        s2s = [v for v in t.vms.values() if v.get("s2s")]
        if s2s and op_name == "migrate":
            raise StateConflict(f"migrate is not available for VMs protected site to site ({s2s[0]['name']})",
                                action="Use a planned failover and commit.")
        if op_name == "reprotect" and len(s2s) < len(t.vms):
            other = next(v["name"] for v in t.vms.values() if not v.get("s2s"))
            raise StateConflict(f"reprotect is for VMs protected site to site; {other} was recovered into the vault",
                                causes=("Its failed-over copy is a VM the vault made; failback compares its disks "
                                        "with the on-premises ones and ships only the blocks that differ.",),
                                action=f"Fail {other} back with 'asr failover planned {other} --direction "
                                       "to-primary'.")
        network, subnet = ("", "")
        if op_name in MAKES_VMS and len(s2s) < len(t.vms):
            network, subnet = self.recovered.check_network(vault, req.network, req.subnet)
        if op_name in MAKES_VMS:
            kind = "test" if op_name == "test" else "failover"
            for v in s2s:   # each NIC's recovery network, checked now (an unmapped one is refused)
                v["networks"] = self.site.networks(vault.id, v, kind, req)
        key: CustomerKey | None = None
        if req.encryption_key:
            key = _parse_key(req.encryption_key)
        if op_name in MAKES_VMS:
            for v in t.vms.values():
                v["size"] = size_for(v["cpus"], v["memory_mb"], req.size)
                if not v["storage"] and not v.get("s2s"):
                    raise StateConflict(f"VM {v['name']} has no replication policy")
            self._check_points(vault.id, t, key, req.point if op_name in POINT_OPS else "latest",
                               chosen=op_name in POINT_OPS)
        steps = self._steps(op_name, t, req)
        ctx = {"failover": 1, "op": op_name, "network": network, "subnet": subnet,
               "steps": [st.to_dict() for st in steps], "vms": t.vms}
        with self.db.write() as conn:
            job_id = self.jobs.create(conn, vault.id, spec.kind, t.name, [(st.name, "") for st in steps], ctx,
                                      open_=True)
            for vid, v in t.vms.items():
                self.items.begin(conn, vault.id, vid, spec.op, job_id, expect=ItemState(v["prev"]))
            self.claim(conn, job_id)
        if key is not None:
            self.keys[job_id] = key
        self.wake()
        return job_id

    def forget_ended_keys(self) -> None:
        """Drop the customer keys of jobs that ended. ``job_done`` drops a job's key when the
        job ends in this process; with several cloud services the job may end in another (the
        site's acknowledgement of its last command went there), and the key must not stay in
        this process's memory for its lifetime."""
        if self.keys:
            for job_id in self.jobs.ended(list(self.keys)):
                self.keys.pop(job_id, None)

    # ---- site commands ------------------------------------------------------------------------
    def grant_command(self, conn: Conn, vault_id: str, vm: dict[str, Any]) -> control_pb2.Command:
        """EnableReplication with the item's current epoch: the primary is the active side."""
        item = self.items.get(vault_id, vm["vm_id"], conn)
        if item is None:
            raise StateConflict(f"VM {vm['name']} is no longer protected")
        body = control_pb2.EnableReplication(host=vm["host"], vm_id=vm["vm_id"], vm_name=vm["name"],
                                             policy=item.policy, vault_id=vault_id)
        if item.site_to_site:
            body.replica_target.CopyFrom(self.site.replica_target(conn, vault_id, item))
        return control_pb2.Command(enable_replication=body)

    # ---- job end ----------------------------------------------------------------------------
    def job_done(self, conn: Conn, job: Row, ok: bool) -> None:
        """Hook of every failover job kind, in the transaction that ends the job: each item goes
        to its result or back (lifecycle); a primary made active again without having been
        told is granted its epoch; what a failed job made is removed."""
        ctx = json.loads(job["context"])
        vault_id = job["vault_id"]
        for vid, v in ctx.get("vms", {}).items():
            out = self.items.end(conn, vault_id, vid, job["id"], ok)
            if out.grant and out.item is not None:
                cmd = self.grant_command(conn, vault_id, v)
                self.commands.enqueue(conn, vault_id, v["provider"], cmd, epoch=out.item.epoch)
        if not ok:
            self.recovered.undo_job(conn, vault_id, job["id"], list(ctx.get("vms", {})))
            if ctx.get("op") == "failback":
                for vid, v in ctx.get("vms", {}).items():
                    if v.get("s2s"):   # the failover VM failback shut down runs again
                        self.commands.enqueue(conn, vault_id, v["recovery_provider"], self.site.restart_command(v))
                    if v.get("prev") == ItemState.REVERSE_PROTECTED:   # and the primary follows it again
                        item = self.items.get(vault_id, vid, conn)
                        if item is not None:
                            self.commands.enqueue(conn, vault_id, v["provider"],
                                                  self.site.reverse_command(v, item, "start"), epoch=item.epoch)
        self.keys.pop(job["id"], None)


def _action(a: dict[str, Any]) -> dict[str, Any]:
    return {"action": a["name"], "argv": list(a.get("argv", [])), "timeout_seconds": a.get("timeout_seconds", 0.0),
            "instructions": a.get("instructions", "")}


def _parse_key(content: bytes) -> CustomerKey:
    """The key file's content, checked like ``CustomerKey.load`` but in memory only."""
    try:
        doc = json.loads(content)
        if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT or doc.get("version") != KEY_FILE_VERSION:
            raise ValueError("not a customer-managed key file")
        key = CustomerKey(base64.b64decode(doc["key"], validate=True))
        if key.fingerprint != doc.get("fingerprint"):
            raise ValueError("the key does not match its fingerprint")
    except (ValueError, KeyError, TypeError, binascii.Error, EncryptionKeyError) as exc:
        raise EncryptionKeyError(f"the customer-managed key file given is unusable: {exc}",
                                 action="Pass the key file written at provider registration.") from exc
    return key
