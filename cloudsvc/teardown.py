"""Deleting a vault: refused while anything lives in it; with ``--force``, torn down in order
as a job.

``asr vault delete V`` lists what lives in the vault (protected VMs, recovered VMs, servers,
stored recovery points, running jobs) and refuses. ``--force`` marks the vault Deleting and
starts a ``DeleteVault`` job that the runner carries out stage by stage, resumable after a
kill -9 (every step is idempotent):

1. tell each protected VM's site to stop replicating (tolerant: a site that does not answer
   within the deadline is not waited for; the vault refuses it anyway afterwards);
2. remove the protected items and cancel the vault's other jobs;
3. delete the recovered VMs and their disk files;
4. revoke every server of the vault (their certificates are refused from then on);
5. destroy every storage account's stored data (packs, index) — nothing is left orphaned;
6. delete the vault's rows (the job goes with them: ``--wait`` reports the vault gone).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from asrclock import Clock
from asrerrors import NotFound, StateConflict
from asrops.environment import seconds
from cloudsvc.commands import Commands
from cloudsvc.events import VAULT_TEARDOWN, Events, Severity
from cloudsvc.failover.recovered import Recovered
from cloudsvc.failover.steps import Stages, Step, StepKind
from cloudsvc.inventory import Inventory
from cloudsvc.jobs import Jobs
from cloudsvc.lifecycle import ProtectedItems
from cloudsvc.registrar import Registrar
from cloudsvc.replication import Replication
from cloudsvc.vaults import VaultRow, Vaults
from metastore.database import Conn, Database

KIND = "DeleteVault"
SITE_DEADLINE_S = seconds("ASR_TEARDOWN_SITE_TIMEOUT")


class Teardown:
    def __init__(self, db: Database, clock: Clock, vaults: Vaults, items: ProtectedItems, jobs: Jobs,
                 commands: Commands, inventory: Inventory, registrar: Registrar, recovered: Recovered,
                 replication: Replication, events: Events) -> None:
        self.db = db
        self.clock = clock
        self.vaults = vaults
        self.items = items
        self.jobs = jobs
        self.commands = commands
        self.inventory = inventory
        self.registrar = registrar
        self.recovered = recovered
        self.replication = replication
        self.events = events

    def kinds(self) -> set[str]:
        return {KIND}

    def handlers(self, runner: Any) -> dict[StepKind, Any]:
        self._runner = runner
        return {StepKind.TEARDOWN_ITEMS: self._items, StepKind.TEARDOWN_RECOVERED: self._recovered,
                StepKind.TEARDOWN_SERVERS: self._servers, StepKind.TEARDOWN_STORAGE: self._storage,
                StepKind.TEARDOWN_VAULT: self._vault}

    # ---- what lives in a vault ----------------------------------------------------------------
    def contents(self, vault_id: str) -> list[str]:
        out = []
        items = self.items.all(vault_id)
        if items:
            out.append(f"{len(items)} protected VM(s): " + ", ".join(f"{i.name} ({i.state})" for i in items[:20]))
        rvms = self.recovered.count_live(vault_id)
        if rvms:
            out.append(f"{len(rvms)} recovered VM(s): " + ", ".join(rvms[:20]))
        servers = self.registrar.list_servers(vault_id)
        if servers:
            out.append(f"{len(servers)} registered server(s): "
                       + ", ".join(f"{s['role']}/{s['name']}" for s in servers[:20]))
        for sa in self.vaults.list_storage(vault_id):
            try:
                used = self.replication.store(vault_id, sa["name"]).storage_bytes()
            except NotFound:
                continue
            if used:
                out.append(f"storage account {sa['name']} holds {used} bytes of recovery points")
        jobs = [j for j in self.jobs.open_jobs(vault_id)]
        if jobs:
            out.append(f"{len(jobs)} running job(s): " + ", ".join(f"{j['kind']} {j['id']}" for j in jobs[:20]))
        return out

    # ---- entry point --------------------------------------------------------------------------
    def delete(self, vault: VaultRow, force: bool) -> str:
        """'' when the vault was empty and is gone; otherwise the teardown job's id."""
        if vault.state == "Deleting":
            running = [j["id"] for j in self.jobs.open_jobs(vault.id) if j["kind"] == KIND]
            if running:
                return str(running[0])
        lives = self.contents(vault.id)
        if not force:
            if lives:
                raise StateConflict(
                    f"vault {vault.name!r} is not empty", details=lives,
                    causes=("Deleting it would lose protection, recovery points and recovered VMs.",),
                    action=(f"Disable protection and remove what is listed, or tear everything down with "
                            f"'asr vault delete {vault.name} --force' (a job)."))
            with self.db.write() as conn:
                self.registrar.revoke_all(conn, vault.id, "vault deleted")
                self.vaults.delete_rows(conn, vault.id)
            for loc in [*self.vaults.storage_locations(vault.id), os.path.join(self.replication.root, vault.id)]:
                shutil.rmtree(loc, ignore_errors=True)
            return ""
        s = Stages()
        vms = {}
        for item in self.items.all(vault.id):
            row = self.db.one("SELECT host, provider FROM vms WHERE vault_id=? AND vm_id=?", (vault.id, item.vm_id))
            vms[item.vm_id] = {"vm_id": item.vm_id, "name": item.name, "host": row["host"] if row else "",
                               "provider": item.provider}
            if row is not None:
                s.add(StepKind.DISABLE, f"Tell {row['host']} to stop replicating {item.name}", item.vm_id,
                      tolerant=True, deadline_s=SITE_DEADLINE_S)
            rec = self.db.one("SELECT provider FROM hosts WHERE vault_id=? AND name=?",
                              (vault.id, item.recovery_host)) if item.site_to_site else None
            if rec is not None:   # site to site: the recovery host lets the replica go, and its data
                vms[item.vm_id].update(recovery_host=item.recovery_host, recovery_provider=rec["provider"],
                                       pairing_id=item.pairing_id)
                s.add(StepKind.REPLICA, f"Tell {item.recovery_host} to release the replica of {item.name}",
                      item.vm_id, action="release", tolerant=True, deadline_s=SITE_DEADLINE_S)
        s.next()
        s.add(StepKind.TEARDOWN_ITEMS, "Disable protection of every VM and cancel running jobs")
        s.next()
        s.add(StepKind.TEARDOWN_RECOVERED, "Delete the recovered VMs and their disks")
        s.next()
        s.add(StepKind.TEARDOWN_SERVERS, "Revoke every provider and agent of the vault")
        s.next()
        for sa in self.vaults.list_storage(vault.id):
            s.add(StepKind.TEARDOWN_STORAGE, f"Delete the stored data of storage account {sa['name']}",
                  storage=str(sa["name"]))
        s.next()
        s.add(StepKind.TEARDOWN_VAULT, f"Delete vault {vault.name}")
        ctx = {"steps": [st.to_dict() for st in s.steps], "vms": vms}
        with self.db.write() as conn:
            self.vaults.set_state(conn, vault.id, "Deleting")
            job_id = self.jobs.create(conn, vault.id, KIND, vault.name, [(st.name, "") for st in s.steps], ctx)
            self.events.record(conn, vault.id, Severity.WARNING, VAULT_TEARDOWN,
                               f"vault {vault.name} is being deleted with --force (job {job_id}): "
                               + "; ".join(lives or ["it is empty"]))
        return job_id

    # ---- steps (cloud steps of the runner; each idempotent) -------------------------------------
    def _items(self, job: Any, ctx: dict[str, Any], seq: int, step: Step) -> None:
        def remove(conn: Conn) -> None:
            for j in self.jobs.open_jobs(job["vault_id"]):
                if j["id"] != job["id"]:
                    self.jobs.cancel(conn, j["id"], StateConflict("the vault is being deleted"))
            self.items.remove_all(conn, job["vault_id"], f"vault deleted (job {job['id']})")

        n = len(self.items.all(job["vault_id"]))
        self._runner.finish(job["id"], seq, True, f"protection disabled for {n} VM(s)", then=remove)

    def _recovered(self, job: Any, ctx: dict[str, Any], seq: int, step: Step) -> None:
        with self.db.write() as conn:
            n = self.recovered.delete_all(conn, job["vault_id"])
        self.recovered.reap()
        left = self.recovered.count_live(job["vault_id"])
        if left:
            raise StateConflict(f"{len(left)} recovered VM(s) could not be removed yet: {', '.join(left[:5])}")
        self._runner.finish(job["id"], seq, True, f"{n} recovered VM(s) deleted")

    def _servers(self, job: Any, ctx: dict[str, Any], seq: int, step: Step) -> None:
        out: list[int] = []

        def revoke(conn: Conn) -> None:
            out.append(self.registrar.revoke_all(conn, job["vault_id"], "vault deleted"))

        self._runner.finish(job["id"], seq, True, "servers revoked", then=revoke)

    def _storage(self, job: Any, ctx: dict[str, Any], seq: int, step: Step) -> None:
        vault_id = job["vault_id"]
        st = self.replication.store(vault_id, step.storage)
        self.replication.drop_store(vault_id, step.storage)
        freed = st.storage_bytes()
        st.destroy()
        st.close()
        self._runner.finish(job["id"], seq, True, f"storage account {step.storage}: {freed} bytes deleted")

    def _vault(self, job: Any, ctx: dict[str, Any], seq: int, step: Step) -> None:
        locations = self.vaults.storage_locations(job["vault_id"])

        def delete(conn: Conn) -> None:
            self.vaults.delete_rows(conn, job["vault_id"])

        self._runner.finish(job["id"], seq, True, "vault deleted", then=delete)
        for loc in [*locations, os.path.join(self.replication.root, job["vault_id"])]:
            shutil.rmtree(loc, ignore_errors=True)
