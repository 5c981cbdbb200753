"""The vault's event history: what happened to a protected item or a server, and when.

One table (``events``), written only here, always inside the caller's transaction so that an
event is recorded exactly when the change it describes commits (a state change and its
event never disagree after a crash). Events are what an operator reads after the fact:
"db01 has failed over; replication from hv01 is fenced", "cloud gold is no longer in
provider vmm01's configuration", "quiesce hook failed; the point is crash-consistent".

Severity is ``Info``, ``Warning`` or ``Critical``; ``code`` is an ``asrerrors`` code for
problems, or an ``EVT-`` code for plain history (below).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from asrclock import Clock
from sqlitestore.database import Database

MAX_MESSAGE = 2000
DEFAULT_LIMIT = 200


class Severity(StrEnum):
    INFO = "Info"
    WARNING = "Warning"
    CRITICAL = "Critical"


# Event codes of plain history (problems use their asrerrors code instead).
STATE_CHANGED = "EVT-0001"       # a protected item changed state (operations and jobs)
EPOCH_ADVANCED = "EVT-0002"      # the active side changed: the other side is fenced
SOURCE_RETURNED = "EVT-0003"     # a missing VM is reported by its provider again
SERVER_REMOVED = "EVT-0004"      # an operator removed a provider or agent
VAULT_TEARDOWN = "EVT-0005"      # vault delete --force started
QUIESCE_RECOVERED = "EVT-0006"   # an app-consistent point succeeded after a failing hook


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


class Events:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def record(self, conn: sqlite3.Connection, vault_id: str, severity: Severity, code: str, message: str, *,
               vm_id: str = "", vm_name: str = "", server: str = "") -> None:
        """Add an event in the caller's transaction."""
        conn.execute(
            "INSERT INTO events(vault_id, at, severity, vm_id, vm_name, server, code, message)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (vault_id, self.clock.now(), str(severity), vm_id, vm_name, server, code, message[:MAX_MESSAGE]))

    def list(self, vault_id: str, vm_id: str = "", limit: int = DEFAULT_LIMIT) -> list[Event]:
        """Newest first; one VM's events when ``vm_id`` is given."""
        limit = limit if 0 < limit <= 10000 else DEFAULT_LIMIT
        if vm_id:
            rows = self.db.query("SELECT * FROM events WHERE vault_id=? AND vm_id=? ORDER BY id DESC LIMIT ?",
                                 (vault_id, vm_id, limit))
        else:
            rows = self.db.query("SELECT * FROM events WHERE vault_id=? ORDER BY id DESC LIMIT ?", (vault_id, limit))
        return [Event(r["id"], r["at"], r["severity"], r["vm_id"], r["vm_name"], r["server"], r["code"],
                      r["message"]) for r in rows]
