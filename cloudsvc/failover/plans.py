"""Recovery plans: up to 100 VMs in up to seven ordered groups, with script and manual actions
before and after each group. A plan is one row; its groups are a JSON document, small enough
to rewrite whole on every change."""

from __future__ import annotations

import json
from typing import Any

from asrclock import Clock
from asrerrors import AlreadyExists, NotFound, UsageError
from asrpb import failover_pb2
from cloudsvc.inventory import Inventory
from cloudsvc.naming import check_name
from metastore.database import Database, IntegrityError, Row

MAX_VMS = 100
MAX_GROUPS = 7
DEFAULT_SCRIPT_TIMEOUT = 300.0


class Plans:
    def __init__(self, db: Database, clock: Clock, inventory: Inventory) -> None:
        self.db = db
        self.clock = clock
        self.inventory = inventory

    def _row(self, vault_id: str, name: str) -> Row:
        r = self.db.one("SELECT * FROM recovery_plans WHERE vault_id=? AND name=?", (vault_id, name))
        if r is None:
            raise NotFound(f"recovery plan {name!r} does not exist in this vault",
                           action="List plans with 'asr plan list'.")
        return r

    def groups(self, vault_id: str, name: str) -> list[dict[str, Any]]:
        return list(json.loads(self._row(vault_id, name)["groups"]))

    def _resolve(self, vault_id: str, refs: list[str]) -> list[str]:
        return [str(self.inventory.find_vm(vault_id, ref)["vm_id"]) for ref in refs]

    def _check(self, groups: list[dict[str, Any]]) -> None:
        if len(groups) > MAX_GROUPS:
            raise UsageError(f"a recovery plan has at most {MAX_GROUPS} groups")
        vms = [v for g in groups for v in g["vms"]]
        if len(vms) > MAX_VMS:
            raise UsageError(f"a recovery plan has at most {MAX_VMS} VMs ({len(vms)} given)")
        if len(set(vms)) != len(vms):
            raise UsageError("a VM may be in only one group of a recovery plan")

    def _save(self, vault_id: str, name: str, groups: list[dict[str, Any]]) -> None:
        self._check(groups)
        with self.db.write() as conn:
            conn.execute("UPDATE recovery_plans SET groups=? WHERE vault_id=? AND name=?",
                         (json.dumps(groups), vault_id, name))

    def create(self, vault_id: str, name: str, vms: list[str]) -> None:
        check_name("recovery plan", name)
        groups = [{"number": 1, "vms": self._resolve(vault_id, vms), "actions": []}]
        self._check(groups)
        try:
            with self.db.write() as conn:
                conn.execute("INSERT INTO recovery_plans(vault_id, name, groups, created_at) VALUES (?,?,?,?)",
                             (vault_id, name, json.dumps(groups), self.clock.now()))
        except IntegrityError as exc:
            raise AlreadyExists(f"recovery plan {name!r} already exists") from exc

    def add_group(self, vault_id: str, name: str, vms: list[str]) -> None:
        groups = self.groups(vault_id, name)
        groups.append({"number": len(groups) + 1, "vms": self._resolve(vault_id, vms), "actions": []})
        self._save(vault_id, name, groups)

    def add_action(self, vault_id: str, name: str, req: failover_pb2.PlanActionRequest) -> None:
        groups = self.groups(vault_id, name)
        if not 1 <= req.group <= len(groups):
            raise UsageError(f"plan {name!r} has no group {req.group} (it has {len(groups)})")
        if req.when not in ("before", "after"):
            raise UsageError(f"--when {req.when!r} must be before or after")
        if req.kind == "script":
            if not req.argv:
                raise UsageError("a script action needs the program to run (argv)")
        elif req.kind != "manual":
            raise UsageError(f"action kind {req.kind!r} must be script or manual")
        check_name("action", req.name)
        groups[req.group - 1]["actions"].append({
            "when": req.when, "kind": req.kind, "name": req.name, "argv": list(req.argv),
            "timeout_seconds": req.timeout_seconds or DEFAULT_SCRIPT_TIMEOUT, "instructions": req.instructions,
        })
        self._save(vault_id, name, groups)

    def delete(self, vault_id: str, name: str) -> None:
        self._row(vault_id, name)
        with self.db.write() as conn:
            conn.execute("DELETE FROM recovery_plans WHERE vault_id=? AND name=?", (vault_id, name))

    def names(self, vault_id: str) -> list[str]:
        return [r["name"] for r in self.db.query("SELECT name FROM recovery_plans WHERE vault_id=? ORDER BY name",
                                                 (vault_id,))]

    def message(self, vault_id: str, name: str) -> failover_pb2.Plan:
        row = self._row(vault_id, name)
        names = {r["vm_id"]: r["name"] for r in self.db.query("SELECT vm_id, name FROM vms WHERE vault_id=?",
                                                               (vault_id,))}
        return failover_pb2.Plan(name=name, created_at=row["created_at"], groups=[
            failover_pb2.PlanGroup(number=g["number"], vms=[names.get(v, v) for v in g["vms"]], actions=[
                failover_pb2.PlanAction(when=a["when"], kind=a["kind"], name=a["name"], argv=a["argv"],
                                        timeout_seconds=a["timeout_seconds"], instructions=a["instructions"])
                for a in g["actions"]])
            for g in json.loads(row["groups"])])
