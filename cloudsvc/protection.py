"""Replication policies, protected items and the operations allowed on them.

A cloud is protected with a policy; saving the policy configures every host of the cloud
through its provider, as a job. A VM is protected only when its cloud is, after validation
against every rule of ``vmspec.protection_violations``.
"""

from __future__ import annotations

import json
import re
import sqlite3

from asrclock import Clock
from asrerrors import InvalidPolicy, StateConflict, ValidationFailed
from asrpb import control_pb2, inventory_pb2
from cloudsvc.commands import Commands
from cloudsvc.inventory import Inventory, dumps_policy, loads_policy, parse_vm, vm_to_spec
from cloudsvc.jobs import Jobs
from cloudsvc.vaults import VaultRow, Vaults
from sqlitestore.database import Database
from vmspec import protection_violations

COPY_FREQUENCIES = (30, 300, 900)

# protection state -> operations an operator may run (ASR's "allowed operations").
ALLOWED: dict[str, list[str]] = {
    "Unprotected": ["protect"],
    "EnablingProtection": [],
    "Protected": ["unprotect", "test-failover", "planned-failover", "unplanned-failover"],
    "DisablingProtection": [],
}


def validate_policy(p: inventory_pb2.Policy) -> None:
    problems = []
    if p.copy_frequency_seconds not in COPY_FREQUENCIES:
        problems.append(f"copy frequency {p.copy_frequency_seconds}s is not allowed; allowed: 30s, 5m, 15m")
    if not 0 <= p.retention_hours <= 24:
        problems.append(f"retention {p.retention_hours} h is out of range; allowed: 0 to 24 hours")
    if not 0 <= p.app_consistent_hours <= 12:
        problems.append(f"app-consistent frequency {p.app_consistent_hours} h is out of range; "
                        "allowed: 0 (none) or 1 to 12 hours")
    elif p.app_consistent_hours and p.app_consistent_hours > max(p.retention_hours, 0):
        problems.append(f"app-consistent frequency {p.app_consistent_hours} h must not exceed the retention "
                        f"({p.retention_hours} h)")
    if p.start != "now" and not re.fullmatch(r"([01]\d|2[0-3]):(00|30)", p.start or ""):
        problems.append(f"start {p.start!r} is not allowed; allowed: now, or HH:MM on a 30-minute boundary "
                        "(e.g. 01:30)")
    if problems:
        raise InvalidPolicy("the replication policy is invalid", details=problems,
                            action="Correct the values listed and save the policy again.")


class Protection:
    def __init__(self, db: Database, clock: Clock, vaults: Vaults, inventory: Inventory, jobs: Jobs,
                 commands: Commands) -> None:
        self.db = db
        self.clock = clock
        self.vaults = vaults
        self.inventory = inventory
        self.jobs = jobs
        self.commands = commands
        jobs.hooks["EnableProtection"] = self._enable_done
        jobs.hooks["DisableProtection"] = self._disable_done

    # ---- clouds ---------------------------------------------------------------------------
    def protect_cloud(self, vault: VaultRow, cloud: str, policy: inventory_pb2.Policy) -> str:
        validate_policy(policy)
        row = self.inventory.cloud(vault.id, cloud)
        sa = self.vaults.storage(vault.id, policy.storage)
        if sa["region"] != vault.region:
            raise InvalidPolicy(f"storage account {policy.storage!r} is in {sa['region']}, the vault in {vault.region}",
                                action="Use a storage account in the vault's region.")
        if sa["redundancy"] != "GRS":
            raise InvalidPolicy(f"storage account {policy.storage!r} is {sa['redundancy']}; replication needs GRS",
                                action="Create a storage account with --redundancy GRS.")
        if policy.encrypt:
            prov = self.db.one("SELECT encryption FROM servers WHERE vault_id=? AND role='provider' AND name=?",
                               (vault.id, row["provider"]))
            if prov is None or not prov["encryption"]:
                raise InvalidPolicy(
                    f"encryption was requested but provider {row['provider']!r} did not register with "
                    "customer-managed encryption",
                    action="Register the provider again with --encryption, or protect without --encrypt.")
        policy.cloud = cloud
        hosts = self.inventory.hosts(vault.id, cloud)
        with self.db.write() as conn:
            conn.execute("INSERT OR REPLACE INTO policies(vault_id, cloud, policy, created_at) VALUES (?,?,?,?)",
                         (vault.id, cloud, dumps_policy(policy), self.clock.now()))
            tasks = []
            for h in hosts:
                cmd = control_pb2.Command(configure_host=control_pb2.ConfigureHost(
                    host=h["name"], policy=policy, vault_id=vault.id))
                cid = self.commands.enqueue(conn, vault.id, row["provider"], cmd)
                tasks.append((f"Configure host {h['name']}", cid))
            job_id = self.jobs.create(conn, vault.id, "ConfigureProtection", cloud, tasks)
        self.commands.notify()
        return job_id

    def policy(self, vault_id: str, cloud: str) -> inventory_pb2.Policy | None:
        row = self.db.one("SELECT policy FROM policies WHERE vault_id=? AND cloud=?", (vault_id, cloud))
        return loads_policy(row["policy"]) if row else None

    # ---- VMs ------------------------------------------------------------------------------
    def item(self, vault_id: str, vm_id: str) -> sqlite3.Row | None:
        return self.db.one("SELECT * FROM protected_items WHERE vault_id=? AND vm_id=?", (vault_id, vm_id))

    def state(self, vault_id: str, vm_id: str) -> str:
        item = self.item(vault_id, vm_id)
        return str(item["state"]) if item else "Unprotected"

    def require(self, vault_id: str, vm_id: str, name: str, operation: str) -> str:
        state = self.state(vault_id, vm_id)
        allowed = ALLOWED.get(state, [])
        if operation not in allowed:
            raise StateConflict(
                f"{operation} is not allowed for VM {name!r} in state {state}",
                causes=(f"Allowed now: {', '.join(allowed) or 'none (an operation is in progress)'}.",),
            )
        return state

    def protect_vm(self, vault: VaultRow, ref: str, chosen_nic: int | None) -> str:
        row = self.inventory.find_vm(vault.id, ref)
        vm = parse_vm(row)
        self.require(vault.id, vm.vm_id, vm.name, "protect")
        policy = self.policy(vault.id, row["cloud"])
        if policy is None:
            raise StateConflict(f"cloud {row['cloud']!r} of VM {vm.name!r} has no replication policy",
                                action=f"Protect the cloud first: asr cloud protect {row['cloud']} --storage S")
        violations = protection_violations(vm_to_spec(vm), chosen_nic)
        if violations:
            raise ValidationFailed(f"VM {vm.name!r} cannot be protected ({len(violations)} violations)",
                                   details=violations)
        now = self.clock.now()
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO protected_items(vault_id, vm_id, name, cloud, provider, state, policy, created_at,"
                " updated_at) VALUES (?,?,?,?,?, 'EnablingProtection', ?,?,?)",
                (vault.id, vm.vm_id, vm.name, row["cloud"], row["provider"], dumps_policy(policy), now, now),
            )
            cmd = control_pb2.Command(enable_replication=control_pb2.EnableReplication(
                host=row["host"], vm_id=vm.vm_id, vm_name=vm.name, policy=policy))
            cid = self.commands.enqueue(conn, vault.id, row["provider"], cmd)
            job_id = self.jobs.create(conn, vault.id, "EnableProtection", vm.name,
                                      [(f"Enable replication on host {row['host']}", cid)],
                                      context={"vm_id": vm.vm_id})
        self.commands.notify()
        return job_id

    def unprotect_vm(self, vault: VaultRow, ref: str) -> str:
        row = self.inventory.find_vm(vault.id, ref)
        vm = parse_vm(row)
        self.require(vault.id, vm.vm_id, vm.name, "unprotect")
        with self.db.write() as conn:
            conn.execute("UPDATE protected_items SET state='DisablingProtection', updated_at=? WHERE vault_id=?"
                         " AND vm_id=?", (self.clock.now(), vault.id, vm.vm_id))
            cmd = control_pb2.Command(disable_replication=control_pb2.DisableReplication(
                host=row["host"], vm_id=vm.vm_id, vm_name=vm.name))
            cid = self.commands.enqueue(conn, vault.id, row["provider"], cmd)
            job_id = self.jobs.create(conn, vault.id, "DisableProtection", vm.name,
                                      [(f"Disable replication on host {row['host']}", cid)],
                                      context={"vm_id": vm.vm_id})
        self.commands.notify()
        return job_id

    def _enable_done(self, conn: sqlite3.Connection, job: sqlite3.Row, ok: bool) -> None:
        vm_id = json.loads(job["context"])["vm_id"]
        if ok:
            conn.execute("UPDATE protected_items SET state='Protected', updated_at=? WHERE vault_id=? AND vm_id=?",
                         (self.clock.now(), job["vault_id"], vm_id))
        else:
            conn.execute("DELETE FROM protected_items WHERE vault_id=? AND vm_id=?", (job["vault_id"], vm_id))

    def _disable_done(self, conn: sqlite3.Connection, job: sqlite3.Row, ok: bool) -> None:
        vm_id = json.loads(job["context"])["vm_id"]
        if ok:
            conn.execute("DELETE FROM protected_items WHERE vault_id=? AND vm_id=?", (job["vault_id"], vm_id))
        else:
            conn.execute("UPDATE protected_items SET state='Protected' WHERE vault_id=? AND vm_id=?",
                         (job["vault_id"], vm_id))
