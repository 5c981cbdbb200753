"""The vault's event history: what happened to a protected item or a server, and when.

Two tables, written only here: ``events``, and ``health_seen`` (the replication health each
protected item had when maintenance last looked, so that a change becomes one event). An
event is always written inside the caller's transaction, so that it is recorded exactly when
the change it describes commits (a state change and its event never disagree after a
crash). Events are what an operator reads after the fact: "db01 has failed over; replication
from hv01 is fenced", "cloud gold is no longer in provider vmm01's configuration", "quiesce
hook failed; the point is crash-consistent", "web01: health Normal -> Warning".

Severity is ``Info``, ``Warning`` or ``Critical``; ``code`` is an ``asrerrors`` code for
problems, or an ``EVT-`` code for plain history (below).

The history is bounded: :meth:`Events.trim` (run by the maintenance loop) deletes events
older than ``RETENTION_DAYS`` and keeps at most ``MAX_PER_VAULT`` of each vault, the newest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from asrclock import Clock
from metastore.database import Conn, Database

MAX_MESSAGE = 2000
DEFAULT_LIMIT = 200
MAX_LIMIT = 10000
RETENTION_DAYS = 90
MAX_PER_VAULT = 100_000


class Severity(StrEnum):
    INFO = "Info"
    WARNING = "Warning"
    CRITICAL = "Critical"


# Worse is larger: "--severity warning" means Warning and Critical.
RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

# Event codes of plain history (problems use their asrerrors code instead).
STATE_CHANGED = "EVT-0001"       # a protected item changed state (operations and jobs)
EPOCH_ADVANCED = "EVT-0002"      # the active side changed: the other side is fenced
SOURCE_RETURNED = "EVT-0003"     # a missing VM is reported by its provider again
SERVER_REMOVED = "EVT-0004"      # an operator removed a provider or agent
VAULT_TEARDOWN = "EVT-0005"      # vault delete --force started
QUIESCE_RECOVERED = "EVT-0006"   # an app-consistent point succeeded after a failing hook
SERVER_REGISTERED = "EVT-0007"   # a provider or agent registered (or re-registered with --force)
POLICY_SAVED = "EVT-0008"        # a cloud's replication policy was saved
HEALTH_CHANGED = "EVT-0009"      # a protected item's replication health changed
RESOURCE_DELETED = "EVT-0010"    # a storage account, network or recovered VM was deleted
CLOUD_PAIRED = "EVT-0011"        # site to site: a cloud was paired with a recovery cloud
MAPPING_CHANGED = "EVT-0012"     # site to site: a network mapping was created or deleted
REPLICA_HEALTH = "EVT-0013"      # site to site: a recovery host reported another replica health

# The severity of a health-change event is the new health's ("Normal" is Info).
_HEALTH_SEVERITY = {"Normal": Severity.INFO, "Warning": Severity.WARNING, "Critical": Severity.CRITICAL}


@dataclass(frozen=True)
class Event:
    id: int
    at: float
    severity: str
    vm_id: str
    vm_name: str
    server: str
    code: str
    message: str


@dataclass(frozen=True)
class EventFilter:
    """What :meth:`Events.list` returns: every given condition holds (AND)."""

    vm_id: str = ""
    server: str = ""            # "NAME" (either role), "provider/NAME" or "agent/NAME"
    since: float = 0.0          # at or after, seconds since the epoch
    severity: Severity = Severity.INFO   # this severity and worse
    limit: int = DEFAULT_LIMIT


class Events:
    def __init__(self, db: Database, clock: Clock, retention_days: float = RETENTION_DAYS,
                 max_per_vault: int = MAX_PER_VAULT) -> None:
        self.db = db
        self.clock = clock
        self.retention_days = retention_days
        self.max_per_vault = max_per_vault

    def record(self, conn: Conn, vault_id: str, severity: Severity, code: str, message: str, *,
               vm_id: str = "", vm_name: str = "", server: str = "") -> None:
        """Add an event in the caller's transaction."""
        conn.execute(
            "INSERT INTO events(vault_id, at, severity, vm_id, vm_name, server, code, message)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (vault_id, self.clock.now(), str(severity), vm_id, vm_name, server, code, message[:MAX_MESSAGE]))

    def list(self, vault_id: str, f: EventFilter | None = None) -> list[Event]:
        """Newest first, filtered by ``f``."""
        f = f or EventFilter()
        limit = f.limit if 0 < f.limit <= MAX_LIMIT else DEFAULT_LIMIT
        where, args = ["vault_id=?"], [vault_id]
        if f.vm_id:
            where.append("vm_id=?")
            args.append(f.vm_id)
        if f.server:
            if "/" in f.server:
                where.append("server=?")
                args.append(f.server)
            else:   # either role: "provider/NAME" or "agent/NAME"
                where.append("(server=? OR server=?)")
                args += [f"provider/{f.server}", f"agent/{f.server}"]
        if f.since:
            where.append("at>=?")
            args.append(f.since)  # type: ignore[arg-type]
        wanted = [str(s) for s, r in RANK.items() if r >= RANK[f.severity]]
        if len(wanted) < len(RANK):
            where.append(f"severity IN ({','.join('?' * len(wanted))})")
            args += wanted
        rows = self.db.query(f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                             (*args, limit))
        return [Event(r["id"], r["at"], r["severity"], r["vm_id"], r["vm_name"], r["server"], r["code"],
                      r["message"]) for r in rows]

    # ---- health changes ---------------------------------------------------------------------------
    def health_seen(self, conn: Conn, vault_id: str, vm_id: str, vm_name: str, health: str,
                    errors: Sequence[str]) -> str:
        """The health watch saw ``health`` for a protected item: record an event when it differs
        from what was seen last (the first look counts as a change from Normal). Returns the
        health before the change, or "" when nothing changed. In the caller's transaction."""
        row = conn.execute("SELECT health FROM health_seen WHERE vault_id=? AND vm_id=?",
                           (vault_id, vm_id)).fetchone()
        before = row["health"] if row is not None else "Normal"
        if row is not None and before == health:
            return ""
        conn.execute("INSERT INTO health_seen(vault_id, vm_id, health, changed_at) VALUES (?,?,?,?)"
                     " ON CONFLICT (vault_id, vm_id) DO UPDATE SET health=excluded.health,"
                     " changed_at=excluded.changed_at",
                     (vault_id, vm_id, health, self.clock.now()))
        if before == health:
            return ""   # the first look at a Normal item is no change
        why = f": {errors[0]}" if errors else ""
        self.record(conn, vault_id, _HEALTH_SEVERITY.get(health, Severity.WARNING), HEALTH_CHANGED,
                    f"{vm_name}: replication health {before} -> {health}{why}", vm_id=vm_id, vm_name=vm_name)
        return str(before)

    def forget_health(self, conn: Conn, keep: set[tuple[str, str]]) -> None:
        """Drop the last seen health of items no longer protected: (vault id, VM id) not in ``keep``."""
        for r in conn.execute("SELECT vault_id, vm_id FROM health_seen").fetchall():
            if (r["vault_id"], r["vm_id"]) not in keep:
                conn.execute("DELETE FROM health_seen WHERE vault_id=? AND vm_id=?", (r["vault_id"], r["vm_id"]))

    # ---- bounds -----------------------------------------------------------------------------------
    def trim(self, vault_id: str | None = None) -> int:
        """Delete events older than the retention and all but the newest ``max_per_vault`` of
        each vault (of ``vault_id`` only, when given). Returns how many were deleted."""
        cutoff = self.clock.now() - self.retention_days * 86400
        deleted = 0
        only, args = (" WHERE vault_id=?", (vault_id,)) if vault_id else ("", ())
        with self.db.write() as conn:
            deleted += conn.execute("DELETE FROM events WHERE at<?" + (" AND vault_id=?" if vault_id else ""),
                                    (cutoff, *args)).rowcount
            for r in conn.execute(f"SELECT vault_id, count(*) AS n FROM events{only} GROUP BY vault_id",
                                  args).fetchall():
                if r["n"] <= self.max_per_vault:
                    continue
                edge = conn.execute("SELECT id FROM events WHERE vault_id=? ORDER BY id DESC LIMIT 1 OFFSET ?",
                                    (r["vault_id"], self.max_per_vault - 1)).fetchone()
                deleted += conn.execute("DELETE FROM events WHERE vault_id=? AND id<?",
                                        (r["vault_id"], edge["id"])).rowcount
        return deleted
