"""Named leases: background work that must run in one cloud service process at a time when
several serve the same vaults (retention and GC, command expiry, the reaping of deleted
recovered VMs, the health watch).

A lease is a row of ``leases`` (this module is its only writer): name, holder, expires_at.
A process holds a lease while ``expires_at`` (on the injectable clock, which every process
sharing the database must agree on: the system clock, or in tests one fake clock file) is
in the future; it renews it when it is about to do the work and half the period is gone (long
work asks again between its steps: ``Replication.maintenance_round``), and
another process takes it over only once it has expired. Taking and renewing are one conditional upsert, so the
database decides between two processes racing for it: exactly one row update wins.

The holder id (:func:`holder_id`) is host, pid and a random part: a restarted process (same
pid in a container) is a new holder and waits, like any other process, for the old lease to
expire. Jobs have their own leases on their rows (``Jobs.claim``); the period is the same
(``ASR_LEASE_SECONDS``, default 10 s).

The database serialises writers, so a renewal and a takeover can never both succeed; what a
lease cannot stop is a holder that stalls past its lease and then goes on working: work done
under a lease therefore re-checks that it is still the holder (:meth:`Leases.held_in`,
``Jobs.held_in``) in the transaction that records its result.
"""

from __future__ import annotations

import os
import secrets
import socket

from asrclock import Clock
from asrops.environment import seconds
from metastore.database import Conn, Database

LEASE_SECONDS = seconds("ASR_LEASE_SECONDS")


def holder_id() -> str:
    """This process's name as a holder of leases (jobs and named leases)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    def __init__(self, db: Database, clock: Clock, holder: str, period: float = LEASE_SECONDS) -> None:
        if period <= 0:
            raise ValueError("a lease period must be positive")
        self.db = db
        self.clock = clock
        self.holder = holder
        self.period = period

    def acquire(self, name: str) -> bool:
        """Take or renew lease ``name`` for this holder; False while another holder's is in force.
        A lease of ours with more than half its period left is not written again: callers ask
        every few hundred milliseconds, and a write takes the database's write lock."""
        now = self.clock.now()
        row = self.db.one("SELECT holder, expires_at FROM leases WHERE name=?", (name,))
        if row is not None and float(row["expires_at"]) > now:
            if row["holder"] != self.holder:
                return False
            if float(row["expires_at"]) - now >= self.period / 2:
                return True
        with self.db.write() as conn:
            return self.acquire_in(conn, name)

    def acquire_in(self, conn: Conn, name: str) -> bool:
        now = self.clock.now()
        # one statement: the row is inserted, or updated only when it is ours or has expired
        cur = conn.execute(
            "INSERT INTO leases(name, holder, expires_at, acquired_at) VALUES (?,?,?,?)"
            " ON CONFLICT (name) DO UPDATE SET holder=excluded.holder, expires_at=excluded.expires_at,"
            " acquired_at=CASE WHEN leases.holder=excluded.holder THEN leases.acquired_at"
            " ELSE excluded.acquired_at END"
            " WHERE leases.holder=excluded.holder OR leases.expires_at<=?",
            (name, self.holder, now + self.period, now, now))
        return cur.rowcount == 1

    def held_in(self, conn: Conn, name: str) -> bool:
        """Whether lease ``name`` is still this holder's (nobody took it over, and it was not
        released), read in the caller's transaction: as ``Jobs.held_in``, the holder decides,
        not the expiry."""
        row = conn.execute("SELECT holder FROM leases WHERE name=?", (name,)).fetchone()
        return row is not None and row["holder"] == self.holder

    def release(self, name: str) -> None:
        """Give the lease up at once (a clean shutdown): another process need not wait for it."""
        with self.db.write() as conn:
            conn.execute("DELETE FROM leases WHERE name=? AND holder=?", (name, self.holder))

    def holder_of(self, name: str) -> str:
        """Who holds ``name`` now ("" when nobody does)."""
        row = self.db.one("SELECT holder, expires_at FROM leases WHERE name=?", (name,))
        if row is None or float(row["expires_at"]) <= self.clock.now():
            return ""
        return str(row["holder"])
