"""Pairings of site-to-site VMs and what their recovery hosts report (issue 11). The only
writer of the ``replica_points`` and ``replica_status`` tables.

A pairing is recorded (``replica_status``, one row per pairing id) in the transaction that
places a VM on its recovery host (``protection``); it is released, not forgotten, when the
protection goes, so that the host that held it is told so.

The vault never receives a chunk of a site-to-site VM: the recovery host's agent reports,
after every point it made durable and on a timer, the points it keeps (ids, times, sizes),
its free space, the replica's health and when the primary last committed a point there
(``Replication.ReportReplica``). Only the agent a pairing was made for may report on it: a
pairing id the vault never made for that VM is NotFound and another agent's is
PermissionDenied, so that an agent learns nothing of VMs that are not its replicas. A pairing
that is gone (protection disabled, or the VM paired anew) is answered ``paired = false`` and
changes nothing: the host releases the replica.

A report replaces the VM's points (it lists every point the host keeps, so pruning on the
host is a point missing from the next report). Health shown for the VM is the worse of the
health the host reported and the RPO rule of the policy (``replication.health_of``) applied
to the newest point, so a recovery host that stops reporting goes Warning, then Critical.
What the primary reports of its cycles (``ReportProgress``: the last cycle's error, a degraded
cycle's warning) counts as for a VM replicating to the vault: the error makes the VM Warning
before its first point and is listed beside a late RPO, the warning makes it Warning. When
the hosts cannot reach each other that error is the cause an operator needs (ASR-0050 naming
the recovery host): the host's own report only says that its newest point grows old.
"""

from __future__ import annotations

from dataclasses import dataclass

from asrclock import Clock
from asrerrors import NotFound, PermissionDenied, UsageError
from asrpb import replication_pb2
from certs.identity import Identity
from cloudsvc.events import REPLICA_HEALTH, Events, Severity
from cloudsvc.lifecycle import Item, ItemState, ProtectedItems
from cloudsvc.replication import Health, health_of
from metastore.database import Conn, Database, Row

HEALTHS = ("Normal", "Warning", "Critical")
# A released pairing is remembered this long, so that its host, back from an outage, is told
# the pairing is gone rather than refused as a stranger.
RELEASED_KEPT_S = 30 * 86400.0
_RANK = {h: i for i, h in enumerate(HEALTHS)}
_SEVERITY = {"Normal": Severity.INFO, "Warning": Severity.WARNING, "Critical": Severity.CRITICAL}


@dataclass(frozen=True)
class ReplicaPoint:
    point_id: str
    created_at: float
    app_consistent: bool
    logical_bytes: int
    stored_bytes: int
    epoch: int
    host: str


class Replicas:
    def __init__(self, db: Database, clock: Clock, items: ProtectedItems, events: Events) -> None:
        self.db = db
        self.clock = clock
        self.items = items
        self.events = events

    def pair(self, conn: Conn, vault_id: str, vm_id: str, pairing_id: str, host: str) -> None:
        """A VM was placed on recovery host ``host`` under ``pairing_id`` (the caller's transaction)."""
        conn.execute("INSERT INTO replica_status(vault_id, vm_id, pairing_id, host, health, message, free_bytes,"
                     " last_received_at, reported_at) VALUES (?,?,?,?, 'Normal', '', 0, 0, 0)",
                     (vault_id, vm_id, pairing_id, host))

    def report(self, ident: Identity, r: replication_pb2.ReplicaReport) -> bool:
        """Store a recovery host's report; False when the pairing is gone (nothing stored)."""
        row = self.db.one("SELECT * FROM replica_status WHERE vault_id=? AND vm_id=? AND pairing_id=?",
                          (ident.vault_id, r.vm_id, r.pairing_id))
        if row is None:
            raise NotFound(f"VM {r.vm_id} has no pairing {r.pairing_id!r} in this agent's vault",
                           action="Nothing to do: the agent holds no replica the vault knows of under that id.")
        item = self.items.get(ident.vault_id, r.vm_id)
        if ident.role != "agent" or row["host"] != ident.name:
            raise PermissionDenied(
                f"agent {ident.name} is not the recovery host of VM {item.name if item else r.vm_id} "
                f"(pairing {r.pairing_id})",
                causes=("Only the recovery host the vault placed the VM on reports its replica.",),
                action=f"Nothing to do on {ident.name}: the VM's replica is kept on {row['host']}.")
        if row["released_at"] or item is None or item.pairing_id != r.pairing_id:
            return False
        health = r.health or "Normal"
        if health not in HEALTHS:
            raise UsageError(f"replica health {health!r} is unknown; allowed: {', '.join(HEALTHS)}")
        ids = [p.point_id for p in r.points]
        if len(set(ids)) != len(ids) or not all(ids):
            raise UsageError("a replica report names a point twice, or a point without an id")
        now = self.clock.now()
        with self.db.write() as conn:
            before = conn.execute("SELECT health, reported_at FROM replica_status WHERE vault_id=? AND vm_id=? AND"
                                  " pairing_id=?", (item.vault_id, item.vm_id, item.pairing_id)).fetchone()
            conn.execute("DELETE FROM replica_points WHERE vault_id=? AND vm_id=?", (item.vault_id, item.vm_id))
            conn.executemany(
                "INSERT INTO replica_points(vault_id, vm_id, point_id, pairing_id, host, created_at, app_consistent,"
                " logical_bytes, stored_bytes, epoch) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(item.vault_id, item.vm_id, p.point_id, item.pairing_id, ident.name, p.created_at,
                  int(p.app_consistent), max(0, p.logical_bytes), max(0, p.stored_bytes), p.epoch)
                 for p in r.points])
            conn.execute(
                "UPDATE replica_status SET health=?, message=?, free_bytes=?, last_received_at=?, reported_at=?"
                " WHERE vault_id=? AND vm_id=? AND pairing_id=?",
                (health, r.message, max(0, r.free_bytes), r.last_received_at, now, item.vault_id, item.vm_id,
                 item.pairing_id))
            was = before["health"] if before is not None else "Normal"
            if was != health:
                why = f": {r.message}" if r.message else ""
                self.events.record(conn, item.vault_id, _SEVERITY[health], REPLICA_HEALTH,
                                   f"{item.name}: replica on {ident.name} {was} -> {health}{why}",
                                   vm_id=item.vm_id, vm_name=item.name, server=f"agent/{ident.name}")
        return True

    def report_reverse(self, ident: Identity, r: replication_pb2.ReverseReport) -> bool:
        """Store the primary's report of its last reverse sync (re-protect); False when the
        pairing is gone or the VM is not re-protected (nothing stored: the primary stops)."""
        # as for ReportReplica: a pairing the vault never made is NotFound, so that an agent
        # learns nothing of VMs it does not host; a pairing that is gone is ``paired = false``
        row = self.db.one("SELECT released_at FROM replica_status WHERE vault_id=? AND vm_id=? AND pairing_id=?",
                          (ident.vault_id, r.vm_id, r.pairing_id))
        if row is None:
            raise NotFound(f"VM {r.vm_id} has no pairing {r.pairing_id!r} in this agent's vault",
                           action="Nothing to do: this host follows no VM the vault knows of under that id.")
        item = self.items.get(ident.vault_id, r.vm_id)
        primary = self.db.one("SELECT host FROM vms WHERE vault_id=? AND vm_id=?", (ident.vault_id, r.vm_id))
        if ident.role != "agent" or primary is None or primary["host"] != ident.name:
            raise PermissionDenied(f"agent {ident.name} is not the primary host of VM "
                                   f"{item.name if item else r.vm_id}",
                                   causes=("Only the host the VM was protected from follows it by re-protect.",),
                                   action=f"Nothing to do on {ident.name}.")
        if row["released_at"] or item is None or item.pairing_id != r.pairing_id or \
                item.state not in (ItemState.REPROTECTING, ItemState.REVERSE_PROTECTED):
            return False
        now = self.clock.now()
        with self.db.write() as conn:
            before = conn.execute("SELECT reverse_error FROM replica_status WHERE vault_id=? AND vm_id=? AND"
                                  " pairing_id=?", (item.vault_id, item.vm_id, item.pairing_id)).fetchone()
            if before is None:
                return False
            conn.execute("UPDATE replica_status SET reverse_synced_at=CASE WHEN reverse_synced_at > ?"
                         " THEN reverse_synced_at ELSE ? END, reverse_blocks=?,"
                         " reverse_error=?, reverse_reported_at=? WHERE vault_id=? AND vm_id=? AND pairing_id=?",
                         (r.synced_at, r.synced_at, max(0, r.blocks), r.error[:500], now, item.vault_id, item.vm_id,
                          item.pairing_id))
            if bool(before["reverse_error"]) != bool(r.error):
                self.events.record(
                    conn, item.vault_id, Severity.WARNING if r.error else Severity.INFO, REPLICA_HEALTH,
                    f"{item.name}: reverse sync on {ident.name} " + (f"failing: {r.error[:300]}" if r.error else
                                                                      "succeeds again"),
                    vm_id=item.vm_id, vm_name=item.name, server=f"agent/{ident.name}")
        return True

    def reverse_health(self, item: Item, now: float) -> Health:
        """A re-protected VM: the policy's RPO rule applied to the primary's last reverse sync."""
        st = self.db.one("SELECT reverse_synced_at, reverse_error FROM replica_status WHERE vault_id=? AND vm_id=?"
                         " AND pairing_id=?", (item.vault_id, item.vm_id, item.pairing_id))
        synced = float(st["reverse_synced_at"]) if st is not None else 0.0
        error = str(st["reverse_error"]) if st is not None else ""
        h = health_of(item.policy, synced, error, now)
        if h.state == "Normal":
            return h
        age = f"last synced {now - synced:.0f}s ago" if synced else "not synced yet"
        return Health(h.state, [f"Re-protect: the copy on the primary host was {age} (every "
                                f"{item.policy.copy_frequency_seconds or 300}s)"] + ([f"Last error: {error}"] if error
                                                                                       else []))

    def points(self, vault_id: str, vm_id: str) -> list[ReplicaPoint]:
        """The points the recovery host last reported, oldest first."""
        return [ReplicaPoint(r["point_id"], float(r["created_at"]), bool(r["app_consistent"]), int(r["logical_bytes"]),
                             int(r["stored_bytes"]), int(r["epoch"]), r["host"])
                for r in self.db.query("SELECT * FROM replica_points WHERE vault_id=? AND vm_id=?"
                                       " ORDER BY created_at, point_id", (vault_id, vm_id))]

    def held(self, vault_id: str, vm_id: str) -> list[ReplicaPoint] | None:
        """The points of a site-to-site VM (kept on its recovery host); None for any other VM."""
        item = self.items.get(vault_id, vm_id)
        return self.points(vault_id, vm_id) if item is not None and item.site_to_site else None

    def status(self, vault_id: str, vm_id: str) -> Row | None:
        """What the recovery host of the VM's current pairing last reported (None before its first report)."""
        return self.db.one("SELECT * FROM replica_status WHERE vault_id=? AND vm_id=? AND released_at=0 AND"
                           " reported_at>0", (vault_id, vm_id))

    def latest_at(self, vault_id: str, vm_id: str) -> float:
        row = self.db.one("SELECT max(created_at) AS t FROM replica_points WHERE vault_id=? AND vm_id=?",
                          (vault_id, vm_id))
        return float(row["t"]) if row is not None and row["t"] is not None else 0.0

    def health(self, item: Item, primary: Row | None, now: float) -> Health:
        """The worse of what the recovery host reported and the RPO of its newest point, with
        what the primary reported (``primary``: its ``replication_status`` row, or None)."""
        st = self.status(item.vault_id, item.vm_id)
        error = str(primary["last_error"]) if primary is not None else ""
        rpo = health_of(item.policy, self.latest_at(item.vault_id, item.vm_id), error, now)
        if primary is not None and primary["warning"]:
            rpo = Health("Critical" if rpo.state == "Critical" else "Warning",
                         rpo.errors + [f"{primary['warning_code']}: {primary['warning']}"])
        if st is None:
            return rpo
        reported = Health(st["health"], [f"recovery host {st['host']}: {st['message']}"] if st["message"] else [])
        if _RANK.get(reported.state, 0) >= _RANK.get(rpo.state, 0):
            return Health(reported.state, reported.errors + rpo.errors)
        return Health(rpo.state, rpo.errors + reported.errors)

    def rpo(self, item: Item, now: float) -> float | None:
        latest = self.latest_at(item.vault_id, item.vm_id)
        return max(0.0, now - latest) if latest else None

    def forget_vm(self, conn: Conn, vault_id: str, vm_id: str) -> None:
        """Protection ended (lifecycle's ``on_removed``, in that transaction): the points the vault
        knew of go; the pairing is released (its host is told ``paired = false`` from now on),
        and pairings released longer than ``RELEASED_KEPT_S`` ago are forgotten."""
        now = self.clock.now()
        conn.execute("DELETE FROM replica_points WHERE vault_id=? AND vm_id=?", (vault_id, vm_id))
        conn.execute("UPDATE replica_status SET released_at=? WHERE vault_id=? AND vm_id=? AND released_at=0",
                     (now, vault_id, vm_id))
        conn.execute("DELETE FROM replica_status WHERE vault_id=? AND released_at>0 AND released_at<?",
                     (vault_id, now - RELEASED_KEPT_S))
