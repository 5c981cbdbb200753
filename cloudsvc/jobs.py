"""Jobs: every long operation, with tasks, state, timestamps and errors.

States follow ASR: NotStarted, InProgress, Succeeded, Failed, Cancelled, Suspended. A task
waiting on a site command completes when the provider acknowledges the command; the job's
state is derived from its tasks whenever one changes, inside the same transaction. A job
finishing runs the ``on_done`` hook of its kind (e.g. marking a VM Protected), in that
transaction too, so a crash never leaves a finished job with an unfinished effect.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

from asrclock import Clock
from asrerrors import AsrError, NotFound
from sqlitestore.database import Database

JOB_STATES = ("NotStarted", "InProgress", "Succeeded", "Failed", "Cancelled", "Suspended")
TERMINAL = ("Succeeded", "Failed", "Cancelled")

# kind -> hook(conn, job_row, succeeded)
DoneHook = Callable[[sqlite3.Connection, sqlite3.Row, bool], None]


class Jobs:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.hooks: dict[str, DoneHook] = {}

    def create(
        self, conn: sqlite3.Connection, vault_id: str, kind: str, target: str, tasks: list[tuple[str, str]],
        context: dict[str, Any] | None = None,
    ) -> str:
        """Create a job with (task name, command id or '') tasks, inside the caller's transaction."""
        job_id = uuid.uuid4().hex[:12]
        now = self.clock.now()
        conn.execute(
            "INSERT INTO jobs(id, vault_id, kind, target, state, created_at, started_at, context)"
            " VALUES (?,?,?,?, 'InProgress', ?, ?, ?)",
            (job_id, vault_id, kind, target, now, now, json.dumps(context or {})),
        )
        for seq, (name, command_id) in enumerate(tasks):
            conn.execute(
                "INSERT INTO job_tasks(job_id, seq, name, state, started_at, command_id) VALUES (?,?,?,?,?,?)",
                (job_id, seq, name, "InProgress" if command_id else "NotStarted", now if command_id else 0,
                 command_id),
            )
        if not tasks:
            self._settle(conn, job_id)
        return job_id

    def finish_task(
        self, conn: sqlite3.Connection, job_id: str, seq: int, ok: bool, output: str = "",
        error: AsrError | None = None,
    ) -> None:
        now = self.clock.now()
        conn.execute(
            "UPDATE job_tasks SET state=?, ended_at=?, started_at=CASE WHEN started_at=0 THEN ? ELSE started_at END,"
            " output=?, error=? WHERE job_id=? AND seq=?",
            ("Succeeded" if ok else "Failed", now, now, output,
             json.dumps(error.to_dict()) if error else "", job_id, seq),
        )
        self._settle(conn, job_id)

    def command_done(self, conn: sqlite3.Connection, command_id: str, ok: bool, output: str,
                     error: AsrError | None) -> None:
        for t in conn.execute("SELECT job_id, seq FROM job_tasks WHERE command_id=?", (command_id,)).fetchall():
            self.finish_task(conn, t["job_id"], t["seq"], ok, output, error)

    def _settle(self, conn: sqlite3.Connection, job_id: str) -> None:
        job = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if job is None or job["state"] in TERMINAL:
            return
        states = [r["state"] for r in conn.execute("SELECT state FROM job_tasks WHERE job_id=?", (job_id,))]
        if any(s in ("InProgress", "NotStarted", "Suspended") for s in states):
            return
        failed = [r for r in conn.execute(
            "SELECT name, error FROM job_tasks WHERE job_id=? AND state='Failed' ORDER BY seq", (job_id,))]
        state = "Failed" if failed else "Succeeded"
        error = ""
        if failed:
            first = json.loads(failed[0]["error"]) if failed[0]["error"] else {}
            first.setdefault("message", f"task {failed[0]['name']} failed")
            first["message"] = f"task '{failed[0]['name']}' failed: {first['message']}"
            error = json.dumps(first)
        conn.execute("UPDATE jobs SET state=?, ended_at=?, error=? WHERE id=?",
                     (state, self.clock.now(), error, job_id))
        hook = self.hooks.get(job["kind"])
        if hook is not None:
            hook(conn, job, state == "Succeeded")

    def fail_job(self, conn: sqlite3.Connection, job_id: str, error: AsrError) -> None:
        conn.execute("UPDATE job_tasks SET state='Cancelled', ended_at=? WHERE job_id=? AND state IN"
                     " ('NotStarted', 'InProgress', 'Suspended')", (self.clock.now(), job_id))
        job = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        conn.execute("UPDATE jobs SET state='Failed', ended_at=?, error=? WHERE id=?",
                     (self.clock.now(), json.dumps(error.to_dict()), job_id))
        hook = self.hooks.get(job["kind"]) if job else None
        if hook is not None and job is not None:
            hook(conn, job, False)

    def get(self, vault_id: str, job_id: str) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
        job = self.db.one("SELECT * FROM jobs WHERE id=? AND vault_id=?", (job_id, vault_id))
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist in this vault", action="List jobs with 'asr job list'.")
        tasks = self.db.query("SELECT * FROM job_tasks WHERE job_id=? ORDER BY seq", (job_id,))
        return job, tasks

    def list_jobs(self, vault_id: str, limit: int = 200) -> list[sqlite3.Row]:
        return self.db.query("SELECT * FROM jobs WHERE vault_id=? ORDER BY created_at DESC LIMIT ?",
                             (vault_id, limit))

    def tasks(self, job_id: str) -> list[sqlite3.Row]:
        return self.db.query("SELECT * FROM job_tasks WHERE job_id=? ORDER BY seq", (job_id,))
