"""The command queue from the cloud to each provider.

Commands are rows written in the same transaction as the job that waits for them. A
provider's command stream sends every pending command of that provider, the oldest first,
each time the stream (re)connects: delivery is at least once. Completion is idempotent: a
second acknowledgement of a finished command changes nothing.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from asrclock import Clock
from asrerrors import AsrError, ServerRemoved, Unreachable, by_code
from asrpb import control_pb2
from cloudsvc.jobs import Jobs
from metastore.database import Conn, Database, Row


class Commands:
    def __init__(self, db: Database, jobs: Jobs, clock: Clock) -> None:
        self.db = db
        self.jobs = jobs
        self.clock = clock
        # Wakes command streams of this process; other processes' streams poll the table.
        self.changed = threading.Condition()
        # Called after a command's completion is recorded (the job runner turns at once).
        self.on_complete: list[Callable[[], None]] = []

    def enqueue(self, conn: Conn, vault_id: str, provider: str, cmd: control_pb2.Command,
                epoch: int = 0) -> str:
        """Queue ``cmd`` for ``provider`` in the caller's transaction. A command about a
        protected VM carries the item's ``epoch`` (see ``lifecycle``): the agent refuses one
        older than its own, and EnableReplication/Failback grant theirs."""
        cmd.id = cmd.id or uuid.uuid4().hex
        cmd.created_at = self.clock.now()
        cmd.epoch = epoch
        kind = cmd.WhichOneof("body")
        host = str(getattr(getattr(cmd, kind), "host", "")) if kind else ""
        conn.execute(
            "INSERT INTO commands(id, vault_id, provider, body, created_at, state, host)"
            " VALUES (?,?,?,?,?, 'pending', ?)",
            (cmd.id, vault_id, provider, cmd.SerializeToString(), cmd.created_at, host),
        )
        return cmd.id

    def fail_addressed_to(self, conn: Conn, vault_id: str, role: str, name: str) -> int:
        """A server was removed: its pending commands fail (and with them the tasks waiting for
        them), so no job waits for a server that is gone. Returns how many."""
        column = "provider" if role == "provider" else "host"
        rows = conn.execute(f"SELECT id FROM commands WHERE vault_id=? AND {column}=? AND state='pending'",
                            (vault_id, name)).fetchall()
        err = ServerRemoved(f"the {role} {name!r} was removed from the vault before it carried out this command")
        for r in rows:
            conn.execute("UPDATE commands SET state='failed', completed_at=?, result=? WHERE id=?",
                         (self.clock.now(), err.message, r["id"]))
            self.jobs.command_done(conn, r["id"], False, "", err)
        return len(rows)

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

    def pending_counts(self) -> list[Row]:
        """Per vault and provider: pending commands (``n``) and the oldest one's creation time
        (``oldest``), for the metrics."""
        return self.db.query("SELECT vault_id, provider, COUNT(*) AS n, MIN(created_at) AS oldest FROM commands"
                             " WHERE state='pending' GROUP BY vault_id, provider")

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
        for fn in self.on_complete:
            fn()

    def expire(self, timeout: float) -> int:
        """Fail every pending command a job task has waited for longer than ``timeout`` (the
        site did not answer): the task fails with Unreachable, the job ends and puts its items
        back, and the command is no longer delivered. Commands no task waits for (a grant
        sent when a job ended) stay queued until the site takes them."""
        cutoff = self.clock.now() - timeout
        rows = self.db.query(
            "SELECT DISTINCT c.id, c.provider, c.host FROM commands c JOIN job_tasks t ON t.command_id = c.id"
            " WHERE c.state='pending' AND t.state='InProgress' AND c.created_at < ?", (cutoff,))
        for r in rows:
            err = Unreachable(f"the site (provider {r['provider']}, host {r['host'] or '-'}) did not carry out the "
                              f"command within {timeout:.0f} s",
                              causes=("The provider or the host's agent is down or cannot reach the vault.",),
                              action="Bring the site back and run the operation again; for a site that is gone "
                                     "use an unplanned failover or 'asr vm unprotect --force'.")
            with self.db.write() as conn:
                cur = conn.execute("UPDATE commands SET state='failed', completed_at=?, result=? WHERE id=? AND"
                                   " state='pending'", (self.clock.now(), err.message, r["id"]))
                if cur.rowcount:
                    self.jobs.command_done(conn, r["id"], False, "", err)
        return len(rows)

    def wait(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)
