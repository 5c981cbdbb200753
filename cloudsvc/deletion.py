"""Deleting one resource of a vault: a storage account, a network, a recovered VM. Each is
refused (StateConflict, listing what uses it) while something still needs it; the vault as
a whole goes through ``teardown`` instead.

- A **storage account** is in use while a replication policy targets it, a recovery point
  is recorded in it, or a recovered VM's disks live in it. Otherwise its stored data is
  destroyed first (``VaultStore.destroy``: index, then every pack; the account's directory),
  then, in one transaction that checks again, its row. A crash between the two leaves an
  account that exists and is empty (a valid, empty store), never a row without its data
  or data without a row; running the command again finishes it.
- A **network** is in use while a recovered VM is attached to it (one being deleted
  counts until its files are gone: its address is still allocated).
- A **recovered VM** may be deleted only outside the lifecycle of its source: not while it
  is being made, and not while its source's protected item still holds it (a test failover
  not completed, a failover not committed, not yet failed back — test-complete, cancel and
  failback's commit remove it themselves). A VM left after migration or after protection
  was disabled can be deleted. It goes to ``Deleting``, then ``Recovered.reap`` removes its
  files and row.

Each deletion is an event in the vault's history.
"""

from __future__ import annotations

import shutil

from asrclock import Clock
from asrerrors import NotFound, StateConflict
from cloudsvc.events import RESOURCE_DELETED, Events, Severity
from cloudsvc.failover.recovered import Recovered
from cloudsvc.lifecycle import ItemState, ProtectedItems
from cloudsvc.replication import Replication
from cloudsvc.vaults import VaultRow, Vaults
from metastore.database import Conn, Database, Row

# What the source item's state tells the operator to run instead of deleting its recovered VM.
_LIFECYCLE_WAY = {
    "test": "complete the test failover: asr failover test-complete {vm}",
    "failover": "cancel the failover (asr failover cancel {vm}), or commit it and fail back "
                "(asr failover planned {vm} --direction to-primary), or disable protection first",
}


class Deletion:
    def __init__(self, db: Database, clock: Clock, vaults: Vaults, items: ProtectedItems, recovered: Recovered,
                 replication: Replication, events: Events) -> None:
        self.db = db
        self.clock = clock
        self.vaults = vaults
        self.items = items
        self.recovered = recovered
        self.replication = replication
        self.events = events

    # ---- storage accounts -------------------------------------------------------------------
    def storage_users(self, conn: Conn | None, vault_id: str, name: str) -> list[str]:
        """What uses storage account ``name`` (empty: nothing)."""
        q = conn.execute if conn is not None else self.db.query

        def rows(sql: str) -> list[Row]:
            return list(q(sql, (vault_id, name)))  # type: ignore[operator]

        out = []
        storage = self.db.json_text("policy", "storage")
        clouds = [r["cloud"] for r in rows(f"SELECT cloud FROM policies WHERE vault_id=? AND {storage}=?"
                                           " ORDER BY cloud")]
        if clouds:
            out.append(f"the replication policy of cloud(s) {', '.join(clouds)}")
        vms = [r["name"] for r in rows(f"SELECT name FROM protected_items WHERE vault_id=? AND {storage}=?"
                                       " ORDER BY name")]
        if vms:
            out.append(f"protected VM(s) {', '.join(vms[:20])}")
        points = rows("SELECT count(*) AS n, count(DISTINCT vm_id) AS vms FROM recovery_points"
                      " WHERE vault_id=? AND storage=?")[0]
        if points["n"]:
            out.append(f"{points['n']} recovery point(s) of {points['vms']} VM(s)")
        rvms = [f"{r['name']} ({r['kind']}, {r['state']})" for r in rows(
            "SELECT name, kind, state FROM recovered_vms WHERE vault_id=? AND storage=? ORDER BY name")]
        if rvms:
            out.append(f"recovered VM(s) {', '.join(rvms[:20])}")
        return out

    def delete_storage(self, vault: VaultRow, name: str) -> None:
        row = self.vaults.storage(vault.id, name)
        self._refuse_if_used(f"storage account {name!r}", self.storage_users(None, vault.id, name),
                             "Disable protection of the clouds and VMs using it (their points go with it) and "
                             "delete its recovered VMs, or protect the clouds into another account first.")
        st = self.replication.store(vault.id, name)
        self.replication.drop_store(vault.id, name)
        freed = st.storage_bytes()
        st.destroy()
        st.close()
        if row["backend"] == "local":
            shutil.rmtree(row["location"], ignore_errors=True)
        with self.db.write() as conn:
            self._refuse_if_used(f"storage account {name!r}", self.storage_users(conn, vault.id, name), "")
            self.vaults.delete_storage_row(conn, vault.id, name)
            self.events.record(conn, vault.id, Severity.INFO, RESOURCE_DELETED,
                               f"storage account {name} deleted ({freed} bytes of stored data destroyed)")

    # ---- networks ---------------------------------------------------------------------------
    def delete_network(self, vault: VaultRow, name: str) -> None:
        self.vaults.network(vault.id, name)
        with self.db.write() as conn:
            rvms = [f"{r['name']} ({r['kind']}, {r['state']}, {r['address'] or 'no address'})" for r in conn.execute(
                "SELECT name, kind, state, address FROM recovered_vms WHERE vault_id=? AND network=? ORDER BY name",
                (vault.id, name))]
            self._refuse_if_used(f"network {name!r}", [f"recovered VM(s) {', '.join(rvms[:20])}"] if rvms else [],
                                 "Delete or fail back the recovered VMs attached to it first "
                                 "(asr recovered-vm list).")
            self.vaults.delete_network_row(conn, vault.id, name)
            self.events.record(conn, vault.id, Severity.INFO, RESOURCE_DELETED, f"network {name} deleted")

    # ---- recovered VMs ----------------------------------------------------------------------
    def delete_recovered(self, vault: VaultRow, ref: str) -> None:
        rows = [r for r in self.recovered.of_vault(vault.id) if ref in (r["id"], r["name"])]
        if not rows:
            raise NotFound(f"recovered VM {ref!r} does not exist in vault {vault.name!r}",
                           action="List them with 'asr recovered-vm list'.")
        if len(rows) > 1:
            raise StateConflict(f"recovered VM name {ref!r} is ambiguous: "
                                + ", ".join(f"{r['id']} ({r['kind']}, {r['state']})" for r in rows),
                                action="Name the recovered VM by its id.")
        rvm = rows[0]
        with self.db.write() as conn:
            cur = conn.execute("SELECT state FROM recovered_vms WHERE id=?", (rvm["id"],)).fetchone()
            if cur is None or cur["state"] == "Deleting":
                return   # already being deleted: reap finishes it
            if cur["state"] == "Creating":
                raise StateConflict(f"recovered VM {rvm['name']} is still being made by job {rvm['job_id']}",
                                    action=f"Wait for the job (asr job wait {rvm['job_id']}); a failed job removes "
                                           "what it made.")
            item = self.items.get(vault.id, rvm["source_vm_id"], conn)
            if item is not None and item.state != ItemState.PROTECTED:
                raise StateConflict(
                    f"recovered VM {rvm['name']} ({rvm['kind']}) belongs to the {item.state} of {item.name}",
                    causes=("Deleting it outside that operation would leave the protected item without the VM "
                            "its state refers to.",),
                    action=_LIFECYCLE_WAY.get(rvm["kind"], _LIFECYCLE_WAY["failover"]).format(vm=item.name) + ".")
            self.recovered.set_state(conn, rvm["id"], "Deleting")
            self.events.record(conn, vault.id, Severity.INFO, RESOURCE_DELETED,
                               f"recovered VM {rvm['name']} ({rvm['id']}, {rvm['kind']}) deleted",
                               vm_id=rvm["source_vm_id"], vm_name=rvm["source_name"])
        self.recovered.reap()

    @staticmethod
    def _refuse_if_used(what: str, users: list[str], action: str) -> None:
        if users:
            raise StateConflict(f"{what} is in use", details=users, action=action or None)


__all__ = ["Deletion"]
