"""Failover operations: each checks the states of its VMs, then creates one job whose steps
the :class:`~cloudsvc.failover.runner.Runner` carries out.

A job's context holds everything needed to carry it on after a restart (nothing lives only in
memory) except the customer-managed key, which is never stored: a job that still needs it
after the cloud service restarted fails cleanly and asks for the key again.

Steps run in stages: every step of a stage runs in parallel; the next stage starts when all
steps of the current one succeeded. Plans: the shutdown stage for all VMs first, then for each
group in order its "before" actions, its VMs (in parallel), its "after" actions.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from asrerrors import EncryptionKeyError, NotFound, StateConflict, UsageError
from asrpb import failover_pb2
from chunkfmt import CustomerKey, vault_id_key
from cloudsvc.failover import states
from cloudsvc.failover.materialise import check_key
from cloudsvc.failover.plans import Plans
from cloudsvc.failover.recovered import Recovered, size_for
from cloudsvc.inventory import loads_policy, parse_vm
from cloudsvc.protection import ALLOWED
from cloudsvc.vaults import VaultRow
from cloudsvc.vaultstore import PointInfo, VaultStore

REMOVED = "-"  # target state meaning "protection disabled" (migration)


@dataclass(frozen=True)
class Op:
    operation: str      # name in ALLOWED
    kind: str           # job kind
    during: str         # item state while the job runs
    ok: str             # item state after success (per source state, see _target)


OPS: dict[str, Op] = {
    "test": Op("test-failover", "TestFailover", "TestFailoverInProgress", "TestFailoverCleanupPending"),
    "test-complete": Op("test-complete", "TestFailoverCleanup", "TestFailoverCleanupInProgress", "Protected"),
    "planned": Op("planned-failover", "PlannedFailover", "PlannedFailoverInProgress", "FailoverCommitPending"),
    "unplanned": Op("unplanned-failover", "UnplannedFailover", "UnplannedFailoverInProgress",
                    "FailoverCommitPending"),
    "commit": Op("commit", "CommitFailover", "CommitInProgress", "FailoverCommitted"),
    "cancel": Op("cancel", "CancelFailover", "FailoverInProgress", "Protected"),
    "change-point": Op("change-point", "ChangeRecoveryPoint", "FailoverInProgress", "FailoverCommitPending"),
    "failback": Op("failback", "Failback", "FailbackInProgress", "FailbackCommitPending"),
    "migrate": Op("migrate", "Migrate", "MigrationInProgress", REMOVED),
}
KINDS = {op.kind for op in OPS.values()}
SHUTDOWN_TIMEOUT_S = float(os.environ.get("ASR_FAILOVER_SHUTDOWN_TIMEOUT", "60"))


@dataclass
class Target:
    """The VMs an operation acts on, in plan groups (one group for a single VM)."""

    name: str
    groups: list[dict[str, Any]] = field(default_factory=list)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)


class Operations:
    def __init__(self, svc: Any, recovered: Recovered, plans: Plans) -> None:
        self.svc = svc
        self.db = svc.db
        self.recovered = recovered
        self.plans = plans
        # job id -> customer key, in memory only (never stored; see module doc)
        self.keys: dict[str, CustomerKey] = {}

    # ---- targets and checks -----------------------------------------------------------------
    def _vm_info(self, vault_id: str, vm_id: str) -> dict[str, Any]:
        row = self.svc.inventory.find_vm(vault_id, vm_id)
        vm = parse_vm(row)
        item = self.svc.protection.item(vault_id, vm.vm_id)
        policy = loads_policy(item["policy"]) if item else None
        return {"vm_id": vm.vm_id, "name": vm.name, "host": row["host"], "provider": row["provider"],
                "storage": policy.storage if policy else "", "encrypt": bool(policy and policy.encrypt),
                "cpus": vm.cpus, "memory_mb": vm.memory_mb, "prev": item["state"] if item else "Unprotected"}

    def target(self, vault_id: str, req: failover_pb2.FailoverRequest) -> Target:
        if bool(req.vm) == bool(req.plan):
            raise UsageError("name exactly one VM or one recovery plan (--plan)")
        if req.vm:
            vm_id = str(self.svc.inventory.find_vm(vault_id, req.vm)["vm_id"])
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

    def _check_allowed(self, t: Target, operation: str) -> None:
        refused = []
        for v in t.vms.values():
            allowed = ALLOWED.get(v["prev"], [])
            if operation not in allowed:
                refused.append(f"VM {v['name']} is {v['prev']}; allowed now: {', '.join(allowed) or 'none'}")
        if refused:
            raise StateConflict(f"{operation} is not allowed for {t.name!r}", details=refused,
                                causes=("Another operation is in progress, or the VM is in another state.",),
                                action="Run one of the allowed operations, or wait for the running job.")

    def resolve_point(self, vault_id: str, vm: dict[str, Any], spec: str) -> tuple[VaultStore, PointInfo]:
        store: VaultStore = self.svc.replication.store(vault_id, vm["storage"])
        if spec in ("", "latest", "latest-app-consistent"):
            pts = [p for p in store.list_points(vm["vm_id"]) if spec != "latest-app-consistent" or p.kind == "app"]
            if not pts:
                raise NotFound(f"VM {vm['name']} has no {'app-consistent ' if spec.endswith('consistent') else ''}"
                               "recovery point yet", action="Wait for replication (asr point list VM).")
            return store, max(pts, key=lambda p: (p.created_at, p.point_id))
        p = store.get_point(spec)
        if p.vm_id != vm["vm_id"]:
            raise NotFound(f"recovery point {spec} is not a point of VM {vm['name']}")
        return store, p

    def _check_keys(self, vault_id: str, t: Target, key: CustomerKey | None, point: str) -> None:
        """Refuse a missing or wrong key now, before any job or file exists."""
        for v in t.vms.values():
            if not v["encrypt"] and key is None:
                continue
            store, p = self.resolve_point(vault_id, v, point if point not in ("replicated",) else "latest")
            check_key(store, p, vault_id_key(vault_id), key)

    # ---- steps ------------------------------------------------------------------------------
    def _steps(self, op: str, t: Target, req: failover_pb2.FailoverRequest) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        stage = [0]

        def add(kind: str, name: str, vm: str = "", **kw: Any) -> None:
            steps.append({"stage": stage[0], "kind": kind, "name": name, "vm": vm, **kw})

        def next_stage() -> None:
            if steps and steps[-1]["stage"] == stage[0]:
                stage[0] += 1

        def names(vm_id: str) -> str:
            return str(t.vms[vm_id]["name"])

        def groups(make: str, point: str) -> None:
            for g in t.groups:
                for a in g["actions"]:
                    if a["when"] == "before":
                        add(a["kind"], f"Group {g['number']}: {a['kind']} action {a['name']} (before)", **_action(a))
                        next_stage()
                for vm_id in g["vms"]:
                    add("materialise", f"Group {g['number']}: fail over {names(vm_id)}", vm_id, point=point,
                        rkind=make)
                next_stage()
                for a in g["actions"]:
                    if a["when"] == "after":
                        add(a["kind"], f"Group {g['number']}: {a['kind']} action {a['name']} (after)", **_action(a))
                        next_stage()

        every = list(t.vms)
        if op == "test":
            groups("test", req.point or "latest")
        elif op == "test-complete":
            for v in every:
                add("delete_recovered", f"Delete test VM of {names(v)}", v, rkind="test")
        elif op == "planned":
            for v in every:
                add("replicate", f"Shut down {names(v)} and replicate its last changes", v)
            next_stage()
            groups("failover", "replicated")
        elif op == "unplanned":
            for v in every:
                if t.vms[v]["prev"] == "TestFailoverCleanupPending":
                    add("delete_recovered", f"Delete test VM of {names(v)}", v, rkind="test")
                if req.shutdown_source:
                    add("power", f"Try to shut down {names(v)} on premises", v, action="stop", tolerant=True,
                        deadline_s=SHUTDOWN_TIMEOUT_S)
            next_stage()
            groups("failover", req.point or "latest")
        elif op == "commit":
            for v in every:
                if t.vms[v]["prev"] == "FailbackCommitPending":
                    add("delete_recovered", f"Delete the recovered VM of {names(v)}", v, rkind="failover")
                else:
                    add("commit", f"Commit the failover of {names(v)}", v)
        elif op == "cancel":
            for v in every:
                add("delete_recovered", f"Delete the recovered VM of {names(v)}", v, rkind="failover")
            next_stage()
            for v in every:
                add("power", f"Start {names(v)} on premises", v, action="start", tolerant=True,
                    deadline_s=SHUTDOWN_TIMEOUT_S)
        elif op == "change-point":
            for v in every:
                add("materialise", f"Fail over {names(v)} from point {req.point or 'latest'}", v,
                    point=req.point or "latest", rkind="failover")
            next_stage()
            for v in every:
                add("delete_recovered", f"Delete the previous recovered VM of {names(v)}", v, rkind="failover",
                    keep_own=True)
        elif op == "failback":
            for v in every:
                add("stop_recovered", f"Shut down the recovered VM of {names(v)}", v)
            next_stage()
            for v in every:
                add("failback", f"Fail back {names(v)}: ship the differing blocks and start it on premises", v)
        elif op == "migrate":
            for v in every:
                add("replicate", f"Shut down {names(v)} and replicate its last changes", v)
            next_stage()
            for v in every:
                add("materialise", f"Migrate {names(v)}", v, point="replicated", rkind="failover")
            next_stage()
            for v in every:
                add("disable", f"Disable replication of {names(v)}", v)
        return steps

    # ---- entry point ------------------------------------------------------------------------
    def start(self, vault: VaultRow, op_name: str, req: failover_pb2.FailoverRequest) -> str:
        if op_name == "planned" and req.direction == "to-primary":
            op_name = "failback"
        elif op_name == "planned" and req.direction not in ("", "to-recovery"):
            raise UsageError(f"--direction {req.direction!r} must be to-recovery or to-primary")
        op = OPS[op_name]
        t = self.target(vault.id, req)
        self._check_allowed(t, op.operation)
        network, subnet = self.recovered.check_network(vault.id, req.network, req.subnet)
        if req.point and op_name not in ("test", "unplanned", "change-point"):
            raise UsageError(f"--point is not used by {op.operation}")
        key: CustomerKey | None = None
        if req.encryption_key:
            key = _parse_key(req.encryption_key)
        if op_name in ("test", "planned", "unplanned", "change-point", "migrate"):
            for v in t.vms.values():
                v["size"] = size_for(v["cpus"], v["memory_mb"], req.size)
                if not v["storage"]:
                    raise StateConflict(f"VM {v['name']} has no replication policy")
            self._check_keys(vault.id, t, key, req.point or "latest")
        steps = self._steps(op_name, t, req)
        ctx = {"failover": 1, "op": op_name, "network": network, "subnet": subnet, "steps": steps,
               "vms": {vid: {**v, "ok": _ok_state(op_name, v["prev"])} for vid, v in t.vms.items()}}
        now = self.svc.clock.now()
        with self.db.write() as conn:
            for vid, v in t.vms.items():
                cur = conn.execute("SELECT state FROM protected_items WHERE vault_id=? AND vm_id=?",
                                   (vault.id, vid)).fetchone()
                if cur is None or cur["state"] != v["prev"]:
                    raise StateConflict(f"VM {v['name']} changed state meanwhile; try again")
                conn.execute("UPDATE protected_items SET state=?, updated_at=? WHERE vault_id=? AND vm_id=?",
                             (op.during, now, vault.id, vid))
            job_id = self.svc.jobs.create(conn, vault.id, op.kind, t.name, [(s["name"], "") for s in steps], ctx)
        if key is not None:
            self.keys[job_id] = key
        return job_id

    # ---- job end ----------------------------------------------------------------------------
    def job_done(self, conn: sqlite3.Connection, job: sqlite3.Row, ok: bool) -> None:
        """Hook of every failover job kind, in the transaction that ends the job."""
        ctx = json.loads(job["context"])
        vault_id = job["vault_id"]
        now = self.svc.clock.now()
        for vid, v in ctx.get("vms", {}).items():
            if ok and v["ok"] == REMOVED:
                conn.execute("DELETE FROM protected_items WHERE vault_id=? AND vm_id=?", (vault_id, vid))
                continue
            state = v["ok"] if ok else v["prev"]
            location = "Recovery" if state in ("FailoverCommitPending", "FailoverCommitted") else "Primary"
            conn.execute("UPDATE protected_items SET state=?, active_location=?, updated_at=? WHERE vault_id=?"
                         " AND vm_id=?", (state, location, now, vault_id, vid))
        if not ok:
            # Whatever this job made is removed; a recovered VM shut down for failback runs again.
            conn.execute("UPDATE recovered_vms SET state='Deleting', updated_at=? WHERE job_id=?", (now, job["id"]))
            for vid in ctx.get("vms", {}):
                conn.execute("UPDATE recovered_vms SET state='Running', updated_at=? WHERE vault_id=? AND"
                             " source_vm_id=? AND state='Stopped'", (now, vault_id, vid))
        self.keys.pop(job["id"], None)


def _action(a: dict[str, Any]) -> dict[str, Any]:
    return {"action": a["name"], **{k: v for k, v in a.items() if k not in ("kind", "name")}}


def _ok_state(op: str, prev: str) -> str:
    if op == "commit" and prev == "FailbackCommitPending":
        return "Protected"
    return OPS[op].ok


def _parse_key(content: bytes) -> CustomerKey:
    """The key file's content, checked like ``CustomerKey.load`` but in memory only."""
    import base64
    import binascii

    from chunkfmt.customerkey import KEY_FILE_FORMAT, KEY_FILE_VERSION

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


_ = states  # the import installs the failover states into protection.ALLOWED
