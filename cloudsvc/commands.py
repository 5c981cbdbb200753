"""The command queue from the cloud to each provider.

Commands are rows written in the same transaction as the job that waits for them. A
provider's command stream sends every pending command of that provider, the oldest first,
each time the stream (re)connects: delivery is at least once. Completion is idempotent: a
second acknowledgement of a finished command changes nothing.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid

from asrclock import Clock
from asrerrors import AsrError, by_code
from asrpb import control_pb2
from cloudsvc.jobs import Jobs
from sqlitestore.database import Database


class Commands:
    def __init__(self, db: Database, jobs: Jobs, clock: Clock) -> None:
        self.db = db
        self.jobs = jobs
        self.clock = clock
        # Wakes command streams of this process; other processes' streams poll the table.
        self.changed = threading.Condition()

    def enqueue(self, conn: sqlite3.Connection, vault_id: str, provider: str, cmd: control_pb2.Command) -> str:
        cmd.id = cmd.id or uuid.uuid4().hex
        cmd.created_at = self.clock.now()
        conn.execute(
            "INSERT INTO commands(id, vault_id, provider, body, created_at, state) VALUES (?,?,?,?,?, 'pending')",
            (cmd.id, vault_id, provider, cmd.SerializeToString(), cmd.created_at),
        )
        return cmd.id

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def pending(self, vault_id: str, provider: str) -> list[control_pb2.Command]:
        rows = self.db.query(
            "SELECT body FROM commands WHERE vault_id=? AND provider=? AND state='pending' ORDER BY created_at, id",
            (vault_id, provider),
        )
        out = []
        for r in rows:
            c = control_pb2.Command()
            c.ParseFromString(r["body"])
            out.append(c)
        return out

    def mark_delivered(self, command_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("UPDATE commands SET delivered=delivered+1 WHERE id=?", (command_id,))

    def complete(self, vault_id: str, provider: str, result: control_pb2.CommandResult) -> None:
        with self.db.write() as conn:
            row = conn.execute("SELECT state FROM commands WHERE id=? AND vault_id=? AND provider=?",
                               (result.id, vault_id, provider)).fetchone()
            if row is None or row["state"] != "pending":
                return  # unknown or already completed: acknowledgements are idempotent
            conn.execute("UPDATE commands SET state=?, completed_at=?, result=? WHERE id=?",
                         ("done" if result.ok else "failed", self.clock.now(),
                          result.output or result.error_message, result.id))
            error: AsrError | None = None
            if not result.ok:
                error = by_code(result.error_code)(result.error_message or "the site reported a failure")
            self.jobs.command_done(conn, result.id, result.ok, result.output, error)

    def wait(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)
