"""Recovered VMs: the VMs failover makes in the vault, their disks, size and address.

A recovered VM row is made in state ``Creating`` before its first disk file, and becomes
``Running`` only in the transaction that finishes the job task that made it: a VM is never
reported as running while any of its disks is incomplete. Deleting is two-phase too: the row
goes to ``Deleting`` (in the caller's transaction), then :meth:`Recovered.reap` removes the
files and only then the row, so a crash in between is finished by the next reap.

Disk files live in the storage account's directory (local-directory backend):
``LOCATION/recovered/<id>/disk<N>.vhd``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import uuid
from typing import Any

from asrclock import Clock
from asrerrors import InvalidNetwork, UsageError
from asrpb import operator_pb2
from cloudsvc.vaults import VaultRow, Vaults
from metastore.database import Conn, Database, Row

log = logging.getLogger(__name__)

# Sizes a recovered VM can get (name, vCPUs, memory MB): the smallest that fits the source.
SIZES = (
    ("Standard_A1_v2", 1, 2048), ("Standard_A2_v2", 2, 4096), ("Standard_A4_v2", 4, 8192),
    ("Standard_A8_v2", 8, 16384), ("Standard_D16_v3", 16, 65536), ("Standard_D32_v3", 32, 131072),
)
# Protected-item states in which a failover VM's point is no longer pinned (the failover is committed).
UNPINNED = ("FailoverCommitted", "FailbackInProgress", "FailbackCommitPending", "")
# Azure reserves the first four addresses of a subnet and its last one.
RESERVED_HEAD = 4


def size_for(cpus: int, memory_mb: int, wanted: str = "") -> str:
    if wanted:
        if wanted not in {s[0] for s in SIZES}:
            raise UsageError(f"VM size {wanted!r} is unknown", causes=(f"Known: {', '.join(s[0] for s in SIZES)}.",))
        return wanted
    for name, c, m in SIZES:
        if c >= cpus and m >= memory_mb:
            return name
    return SIZES[-1][0]


class Recovered:
    def __init__(self, db: Database, clock: Clock, vaults: Vaults) -> None:
        self.db = db
        self.clock = clock
        self.vaults = vaults

    def get(self, rvm_id: str) -> Row | None:
        return self.db.one("SELECT * FROM recovered_vms WHERE id=?", (rvm_id,))

    def being_made(self, job_id: str, vm_id: str) -> Row | None:
        """The VM ``job_id`` was making of ``vm_id`` when its process died (resume it)."""
        return self.db.one("SELECT * FROM recovered_vms WHERE job_id=? AND source_vm_id=? AND state='Creating'",
                           (job_id, vm_id))

    def set_point(self, conn: Conn, rvm_id: str, point_id: str) -> None:
        conn.execute("UPDATE recovered_vms SET point_id=?, updated_at=? WHERE id=?",
                     (point_id, self.clock.now(), rvm_id))

    def of_source(self, vault_id: str, vm_id: str, kind: str | None = None) -> list[Row]:
        rows = self.db.query("SELECT * FROM recovered_vms WHERE vault_id=? AND source_vm_id=? AND state != 'Deleting'"
                             " ORDER BY created_at", (vault_id, vm_id))
        return [r for r in rows if kind is None or r["kind"] == kind]

    def of_vault(self, vault_id: str) -> list[Row]:
        return self.db.query("SELECT * FROM recovered_vms WHERE vault_id=? ORDER BY name, created_at", (vault_id,))

    def check_network(self, vault: VaultRow, network: str, subnet: str) -> tuple[str, str]:
        """The (network, subnet) a request names, validated; ('', '') for no network. A
        recovered VM runs in the vault's region, so the network must be there too."""
        if network in ("", "none"):
            return "", ""
        row = self.vaults.network(vault.id, network)
        if row["region"] != vault.region:
            raise InvalidNetwork(f"network {network!r} is in region {row['region']}; vault {vault.name!r} recovers "
                                 f"VMs into {vault.region}",
                                 action=f"Choose a network in {vault.region} (asr network list), or create one there.")
        subnets = json.loads(row["subnets"])
        if not subnets:
            raise InvalidNetwork(f"network {network!r} has no subnet", action="Create the network with --subnet.")
        if not subnet:
            return network, subnets[0]["name"]
        if subnet not in {s["name"] for s in subnets}:
            raise InvalidNetwork(f"network {network!r} has no subnet {subnet!r}",
                                 causes=(f"Its subnets: {', '.join(s['name'] for s in subnets)}.",))
        return network, subnet

    def _allocate(self, conn: Conn, vault_id: str, network: str, subnet: str) -> str:
        row = conn.execute("SELECT subnets FROM networks WHERE vault_id=? AND name=?", (vault_id, network)).fetchone()
        cidr = next(s["cidr"] for s in json.loads(row["subnets"]) if s["name"] == subnet)
        net = ipaddress.ip_network(cidr)
        used = {r["address"] for r in conn.execute(
            "SELECT address FROM recovered_vms WHERE vault_id=? AND network=? AND address != ''", (vault_id, network))}
        for i, addr in enumerate(net):
            if i < RESERVED_HEAD or addr == net.broadcast_address:
                continue
            if str(addr) not in used:
                return str(addr)
            if i > 1 << 16:
                break
        raise InvalidNetwork(f"subnet {subnet} ({cidr}) of network {network!r} has no free address",
                             action="Use a larger subnet or another network.")

    def begin(self, conn: Conn, vault_id: str, *, source_vm_id: str, source_name: str, kind: str,
              storage: str, size: str, network: str, subnet: str, job_id: str, point_id: str = "") -> str:
        """A new recovered VM in state Creating, with its address allocated (caller's transaction).
        Its ``point_id`` pins that point against retention from now on (see :meth:`pinned_points`)."""
        location = conn.execute("SELECT backend, location FROM storage_accounts WHERE vault_id=? AND name=?",
                                (vault_id, storage)).fetchone()
        if location is None or location["backend"] != "local":
            raise UsageError(f"storage account {storage!r} does not use the local-directory backend",
                             causes=("Failover materialises disks only into local-directory storage accounts "
                                     "in this release.",))
        rvm_id = "rvm-" + uuid.uuid4().hex[:12]
        name = f"{source_name}-test" if kind == "test" else source_name
        address = self._allocate(conn, vault_id, network, subnet) if network else ""
        now = self.clock.now()
        conn.execute(
            "INSERT INTO recovered_vms(id, vault_id, name, source_vm_id, source_name, kind, state, point_id, storage,"
            " size, network, subnet, address, dir, job_id, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?, 'Creating', ?,?,?,?,?,?,?,?,?,?)",
            (rvm_id, vault_id, name, source_vm_id, source_name, kind, point_id, storage, size, network, subnet,
             address, os.path.join(location["location"], "recovered", rvm_id), job_id, now, now),
        )
        return rvm_id

    def set_state(self, conn: Conn, rvm_id: str, state: str, **fields: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        conn.execute(f"UPDATE recovered_vms SET state=?, updated_at=?{', ' + sets if sets else ''} WHERE id=?",
                     (state, self.clock.now(), *fields.values(), rvm_id))

    def pinned_points(self, vault_id: str, vm_id: str) -> set[str]:
        """Points retention must keep for ``vm_id``: the point of a recovered VM being made, of a
        test VM, and of a failover not yet committed (cancel or change-point may still follow).
        A committed failover's VM no longer needs its point (its disks are its own)."""
        marks = ",".join("?" * len(UNPINNED))
        rows = self.db.query(
            "SELECT r.point_id FROM recovered_vms r LEFT JOIN protected_items p"
            " ON p.vault_id=r.vault_id AND p.vm_id=r.source_vm_id"
            " WHERE r.vault_id=? AND r.source_vm_id=? AND r.point_id != '' AND r.state != 'Deleting'"
            f" AND (r.state='Creating' OR r.kind='test' OR coalesce(p.state, '') NOT IN ({marks}))",
            (vault_id, vm_id, *UNPINNED))
        return {str(r["point_id"]) for r in rows}

    def delete_of_source(self, conn: Conn, vault_id: str, vm_id: str, kind: str) -> int:
        """Mark the source's recovered VMs of ``kind`` for deletion (caller's transaction)."""
        rows = conn.execute("SELECT id FROM recovered_vms WHERE vault_id=? AND source_vm_id=? AND kind=? AND"
                            " state != 'Deleting'", (vault_id, vm_id, kind)).fetchall()
        for r in rows:
            self.set_state(conn, r["id"], "Deleting")
        return len(rows)

    def undo_job(self, conn: Conn, vault_id: str, job_id: str, vm_ids: list[str]) -> None:
        """A failover job failed: whatever it made is removed; a recovered VM it shut down for
        failback runs again."""
        now = self.clock.now()
        conn.execute("UPDATE recovered_vms SET state='Deleting', updated_at=? WHERE job_id=?", (now, job_id))
        for vid in vm_ids:
            conn.execute("UPDATE recovered_vms SET state='Running', updated_at=? WHERE vault_id=? AND"
                         " source_vm_id=? AND state='Stopped'", (now, vault_id, vid))

    def delete_all(self, conn: Conn, vault_id: str) -> int:
        """Vault teardown: every recovered VM of the vault is deleted (files by :meth:`reap`)."""
        cur = conn.execute("UPDATE recovered_vms SET state='Deleting', updated_at=? WHERE vault_id=? AND"
                           " state != 'Deleting'", (self.clock.now(), vault_id))
        return cur.rowcount

    def count_live(self, vault_id: str) -> list[str]:
        return [f"{r['name']} ({r['kind']}, {r['state']})" for r in self.db.query(
            "SELECT name, kind, state FROM recovered_vms WHERE vault_id=? ORDER BY name", (vault_id,))]

    def reap(self) -> int:
        """Remove the files of VMs in state Deleting, then their rows (see module doc)."""
        n = 0
        for r in self.db.query("SELECT id, dir FROM recovered_vms WHERE state='Deleting'"):
            if r["dir"]:
                shutil.rmtree(r["dir"], ignore_errors=True)
            if r["dir"] and os.path.exists(r["dir"]):
                log.warning("cannot remove recovered VM files", extra={"fields": {"dir": r["dir"]}})
                continue
            with self.db.write() as conn:
                conn.execute("DELETE FROM recovered_vms WHERE id=? AND state='Deleting'", (r["id"],))
            n += 1
        return n


def recovered_msg(r: Row) -> operator_pb2.RecoveredVm:
    return operator_pb2.RecoveredVm(
        id=r["id"], name=r["name"], source_vm_id=r["source_vm_id"], source_name=r["source_name"], kind=r["kind"],
        state=r["state"], point_id=r["point_id"], size=r["size"], network=r["network"], subnet=r["subnet"],
        address=r["address"], job_id=r["job_id"], created_at=r["created_at"],
        disks=[operator_pb2.RecoveredDisk(index=d["index"], path=d["path"], virtual_size=d["virtual_size"])
               for d in json.loads(r["disks"])],
    )


def recovered_of_vm(db: Database, vault_id: str, vm_id: str) -> list[operator_pb2.RecoveredVm]:
    """The recovered VMs of one source VM, for ``asr vm show`` (those being deleted left out)."""
    return [recovered_msg(r) for r in db.query(
        "SELECT * FROM recovered_vms WHERE vault_id=? AND source_vm_id=? AND state != 'Deleting' ORDER BY created_at",
        (vault_id, vm_id))]
