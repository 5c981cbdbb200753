"""Jobs: every long operation, with tasks, state, timestamps and errors. This module is the
only writer of the ``jobs`` and ``job_tasks`` tables.

States follow ASR: NotStarted, InProgress, Succeeded, Failed, Cancelled, Suspended. A task
waiting on a site command completes when the provider acknowledges the command; the job's
state is derived from its tasks whenever one changes, inside the same transaction. A job
finishing runs the hook of its kind (e.g. marking a VM Protected), in that transaction too,
so a crash never leaves a finished job with an unfinished effect.

Task transitions (every one inside the caller's transaction)::

    NotStarted ──start_task──▶ InProgress ──finish_task──▶ Succeeded | Failed
    NotStarted ──suspend_task──▶ Suspended ──resume──▶ Succeeded      (a manual action)
    InProgress ──skip_task──▶ Succeeded                                (a tolerant step gave up)
    any open task ──fail_job / cancel──▶ Cancelled

The log has one line when a job starts and one when it ends (state, seconds, the error's
code; a failed job at WARNING), each written once its transaction committed.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from asrclock import Clock
from asrerrors import AsrError, NotFound, StateConflict, UsageError
from metastore.database import Conn, Database, Row

log = logging.getLogger(__name__)

JOB_STATES = ("NotStarted", "InProgress", "Succeeded", "Failed", "Cancelled", "Suspended")
TERMINAL = ("Succeeded", "Failed", "Cancelled")

# kind -> hook(conn, job_row, succeeded)
DoneHook = Callable[[Conn, Row, bool], None]


class Jobs:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.hooks: dict[str, DoneHook] = {}

    def create(
        self, conn: Conn, vault_id: str, kind: str, target: str, tasks: list[tuple[str, str]],
        context: dict[str, Any] | None = None, open_: bool = False,
    ) -> str:
        """Create a job with (task name, command id or '') tasks, inside the caller's transaction.
        With ``open_`` the caller adds tasks with :meth:`add_task` in the same transaction (a
        job with no task would otherwise succeed at once)."""
        job_id = uuid.uuid4().hex[:12]
        now = self.clock.now()
        conn.execute(
            "INSERT INTO jobs(id, vault_id, kind, target, state, created_at, started_at, context)"
            " VALUES (?,?,?,?, 'InProgress', ?, ?, ?)",
            (job_id, vault_id, kind, target, now, now, json.dumps(context or {})),
        )
        for seq, (name, command_id) in enumerate(tasks):
            conn.execute(
                "INSERT INTO job_tasks(job_id, seq, name, state, started_at, command_id, attempts)"
                " VALUES (?,?,?,?,?,?,?)",
                (job_id, seq, name, "InProgress" if command_id else "NotStarted", now if command_id else 0,
                 command_id, 1 if command_id else 0),
            )
        self.db.after_commit(lambda: log.info(f"job {job_id} started: {kind} {target}", extra={"fields": {
            "job": job_id, "kind": kind, "target": target, "vault_id": vault_id}}))
        if not tasks and not open_:
            self._settle(conn, job_id)
        return job_id

    def _ended(self, job: Row, state: str, error: str, ended_at: float) -> None:
        """Log the end of ``job`` (a row read before the change) once the transaction commits."""
        code = json.loads(error).get("code", "") if error else ""
        fields = {"job": job["id"], "kind": job["kind"], "target": job["target"], "vault_id": job["vault_id"],
                  "state": state, "seconds": round(max(0.0, ended_at - float(job["started_at"] or ended_at)), 3),
                  **({"code": code} if code else {})}
        level = logging.WARNING if state == "Failed" else logging.INFO
        text = f"job {job['id']} {state.lower()}: {job['kind']} {job['target']}" + (f" ({code})" if code else "")
        self.db.after_commit(lambda: log.log(level, text, extra={"fields": fields}))

    def add_task(self, conn: Conn, job_id: str, name: str, command_id: str, done: bool = False) -> int:
        """Append a task (waiting for ``command_id``; or already Succeeded with ``done``)."""
        row = conn.execute("SELECT coalesce(max(seq), -1) + 1 AS seq FROM job_tasks WHERE job_id=?",
                           (job_id,)).fetchone()
        now = self.clock.now()
        state = "Succeeded" if done else ("InProgress" if command_id else "NotStarted")
        conn.execute("INSERT INTO job_tasks(job_id, seq, name, state, started_at, ended_at, command_id, attempts)"
                     " VALUES (?,?,?,?,?,?,?,?)", (job_id, row["seq"], name, state,
                                                   now if state != "NotStarted" else 0, now if done else 0,
                                                   command_id, int(state != "NotStarted")))
        if done:
            self._settle(conn, job_id)
        return int(row["seq"])

    def finish_task(
        self, conn: Conn, job_id: str, seq: int, ok: bool, output: str = "",
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

    def start_task(self, conn: Conn, job_id: str, seq: int, command_id: str = "") -> bool:
        """NotStarted → InProgress (waiting for ``command_id`` when given); False if the task
        was not NotStarted (another runner got there first)."""
        cur = conn.execute("UPDATE job_tasks SET state='InProgress', started_at=?, command_id=?, attempts=1"
                           " WHERE job_id=? AND seq=? AND state='NotStarted'",
                           (self.clock.now(), command_id, job_id, seq))
        return cur.rowcount == 1

    def restart_task(self, conn: Conn, job_id: str, seq: int) -> None:
        """A cloud step that was InProgress when its process died runs again from the start."""
        conn.execute("UPDATE job_tasks SET started_at=?, attempts=attempts+1 WHERE job_id=? AND seq=?"
                     " AND state='InProgress'", (self.clock.now(), job_id, seq))

    def suspend_task(self, conn: Conn, job_id: str, seq: int, output: str) -> None:
        """A manual action: the task and its job wait for :meth:`resume`."""
        conn.execute("UPDATE job_tasks SET state='Suspended', started_at=?, output=? WHERE job_id=? AND seq=?",
                     (self.clock.now(), output, job_id, seq))
        conn.execute("UPDATE jobs SET state='Suspended' WHERE id=? AND state='InProgress'", (job_id,))

    def resume(self, vault_id: str, job_id: str, note: str) -> None:
        """Continue a job waiting at a manual action (``asr job resume``)."""
        with self.db.write() as conn:
            self._resume(conn, vault_id, job_id, note)

    def _resume(self, conn: Conn, vault_id: str, job_id: str, note: str) -> None:
        job = conn.execute("SELECT * FROM jobs WHERE id=? AND vault_id=?", (job_id, vault_id)).fetchone()
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist in this vault", action="List jobs with 'asr job list'.")
        waiting = conn.execute("SELECT seq FROM job_tasks WHERE job_id=? AND state='Suspended' ORDER BY seq",
                               (job_id,)).fetchone()
        if job["state"] != "Suspended" or waiting is None:
            raise StateConflict(f"job {job_id} is {job['state']}, not waiting for a manual action",
                                action="Only a Suspended job can be resumed.")
        conn.execute("UPDATE jobs SET state='InProgress' WHERE id=?", (job_id,))
        self.finish_task(conn, job_id, waiting["seq"], True, note)

    def skip_task(self, conn: Conn, job_id: str, seq: int, note: str) -> None:
        """A tolerant task gave up waiting: it succeeds with ``note``, and its command is
        detached so that a late acknowledgement does not touch the task again (the command
        itself stays queued for the site)."""
        conn.execute("UPDATE job_tasks SET state='Succeeded', ended_at=?, command_id='', output=?, error=''"
                     " WHERE job_id=? AND seq=?", (self.clock.now(), note, job_id, seq))
        self._settle(conn, job_id)

    def cancel(self, conn: Conn, job_id: str, error: AsrError) -> None:
        """End a job as Cancelled without running its hook: whoever cancels it has taken over
        what it held (e.g. ``unprotect --force`` of a VM stuck in a protection job)."""
        now = self.clock.now()
        job = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        conn.execute("UPDATE job_tasks SET state='Cancelled', ended_at=? WHERE job_id=? AND state IN"
                     " ('NotStarted', 'InProgress', 'Suspended')", (now, job_id))
        cur = conn.execute("UPDATE jobs SET state='Cancelled', ended_at=?, error=? WHERE id=? AND state IN"
                           " ('NotStarted', 'InProgress', 'Suspended')", (now, json.dumps(error.to_dict()), job_id))
        if cur.rowcount and job is not None:
            self._ended(job, "Cancelled", json.dumps(error.to_dict()), now)

    def open_jobs(self, vault_id: str) -> list[Row]:
        return self.db.query("SELECT * FROM jobs WHERE vault_id=? AND state IN ('NotStarted', 'InProgress',"
                             " 'Suspended') ORDER BY created_at", (vault_id,))

    def running(self, kinds: tuple[str, ...]) -> list[Row]:
        """InProgress jobs of these kinds, in every vault (the runner's work list)."""
        marks = ",".join("?" * len(kinds))
        return self.db.query(f"SELECT * FROM jobs WHERE state='InProgress' AND kind IN ({marks}) ORDER BY created_at",
                             kinds)

    # ---- which process runs a job (several cloud services: see ``cloudsvc.leases``) -----------
    def claim(self, kinds: tuple[str, ...], holder: str, lease_s: float) -> list[Row]:
        """One turn of a runner process ``holder``: renew the leases of the jobs it runs once
        half their period is gone, take every running job of ``kinds`` that nobody holds or
        whose holder's lease expired (it died or stalled), and hand back the InProgress jobs
        it now holds, oldest first. A Suspended job keeps its holder but needs no lease:
        nothing runs until it resumes.

        Most turns change nothing, and then no write transaction is opened: every process
        turns five times a second, and each write takes the database's one write lock (and,
        with SQLite, an fsync). The write re-checks every condition in its statements, so a
        row another process changed since the read is decided by the database."""
        now = self.clock.now()
        marks = ",".join("?" * len(kinds))
        select = f"SELECT * FROM jobs WHERE state='InProgress' AND kind IN ({marks}) ORDER BY created_at"
        rows = self.db.query(select, kinds)
        due = [r for r in rows if r["owner"] == "" or float(r["lease_until"]) <= now
               or (r["owner"] == holder and float(r["lease_until"]) < now + lease_s / 2)]
        if due:
            with self.db.write() as conn:
                # a holder's own lease is renewed only while it is in force: once expired the
                # job may already belong to another process, and the next statement decides
                conn.execute("UPDATE jobs SET lease_until=? WHERE owner=? AND state='InProgress' AND lease_until>?"
                             " AND lease_until<?", (now + lease_s, holder, now, now + lease_s / 2))
                conn.execute(
                    f"UPDATE jobs SET takeovers=takeovers + CASE WHEN owner='' THEN 0 ELSE 1 END, owner=?,"
                    f" lease_until=? WHERE state='InProgress' AND kind IN ({marks}) AND owner!=?"
                    f" AND (owner='' OR lease_until<=?)", (holder, now + lease_s, *kinds, holder, now))
                # an expired lease of our own (this process stalled) that nobody took: ours again
                conn.execute(f"UPDATE jobs SET lease_until=? WHERE state='InProgress' AND kind IN ({marks})"
                             f" AND owner=? AND lease_until<=?", (now + lease_s, *kinds, holder, now))
                rows = conn.execute(select, kinds).fetchall()
        return [r for r in rows if r["owner"] == holder]

    def claim_in(self, conn: Conn, job_id: str, holder: str, lease_s: float) -> None:
        """Hold a job just created in the caller's transaction: the process that made it runs it
        (``Runner.claim_in``)."""
        conn.execute("UPDATE jobs SET owner=?, lease_until=? WHERE id=?", (holder, self.clock.now() + lease_s, job_id))

    def held_in(self, conn: Conn, job_id: str, holder: str) -> bool:
        """Whether ``job_id`` is still ``holder``'s, read in the caller's transaction: a step
        recording its result checks it there, so a process that lost the job (it stalled past
        its lease and another took over) records nothing. The owner, not the lease's expiry,
        decides: a takeover rewrites the owner in a transaction of its own, so a job whose
        row still names this holder was taken by nobody (a lease that ran out while its
        holder's clock jumped, and that nobody took, is still the holder's to finish)."""
        row = conn.execute("SELECT owner FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row is not None and row["owner"] == holder

    def ended(self, job_ids: list[str]) -> set[str]:
        """Which of ``job_ids`` have ended (or no longer exist)."""
        if not job_ids:
            return set()
        where, args = self.db.in_list("id", job_ids)
        open_ = {r["id"] for r in self.db.query(
            f"SELECT id FROM jobs WHERE {where} AND state NOT IN ({','.join('?' * len(TERMINAL))})",
            (*args, *TERMINAL))}
        return set(job_ids) - open_

    def owner_of(self, job_id: str) -> str:
        row = self.db.one("SELECT owner FROM jobs WHERE id=?", (job_id,))
        return str(row["owner"]) if row else ""

    def release(self, holder: str) -> None:
        """A process stopping cleanly gives its jobs up, so another takes them at once."""
        with self.db.write() as conn:
            conn.execute("UPDATE jobs SET lease_until=0 WHERE owner=? AND state='InProgress'", (holder,))

    def state_of(self, conn: Conn, job_id: str) -> str:
        row = conn.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
        return str(row["state"]) if row else ""

    def task_output(self, job_id: str, seq: int) -> str:
        row = self.db.one("SELECT output FROM job_tasks WHERE job_id=? AND seq=?", (job_id, seq))
        return str(row["output"]) if row else ""

    def command_done(self, conn: Conn, command_id: str, ok: bool, output: str,
                     error: AsrError | None) -> None:
        for t in conn.execute("SELECT job_id, seq FROM job_tasks WHERE command_id=?", (command_id,)).fetchall():
            self.finish_task(conn, t["job_id"], t["seq"], ok, output, error)

    def _settle(self, conn: Conn, job_id: str) -> None:
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
        now = self.clock.now()
        conn.execute("UPDATE jobs SET state=?, ended_at=?, error=? WHERE id=?", (state, now, error, job_id))
        self._ended(job, state, error, now)
        hook = self.hooks.get(job["kind"])
        if hook is not None:
            hook(conn, job, state == "Succeeded")

    def fail_job(self, conn: Conn, job_id: str, error: AsrError) -> None:
        conn.execute("UPDATE job_tasks SET state='Cancelled', ended_at=? WHERE job_id=? AND state IN"
                     " ('NotStarted', 'InProgress', 'Suspended')", (self.clock.now(), job_id))
        job = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        now = self.clock.now()
        conn.execute("UPDATE jobs SET state='Failed', ended_at=?, error=? WHERE id=?",
                     (now, json.dumps(error.to_dict()), job_id))
        if job is not None and job["state"] not in TERMINAL:
            self._ended(job, "Failed", json.dumps(error.to_dict()), now)
        hook = self.hooks.get(job["kind"]) if job else None
        if hook is not None and job is not None:
            hook(conn, job, False)

    def get(self, vault_id: str, job_id: str) -> tuple[Row, list[Row]]:
        job = self.db.one("SELECT * FROM jobs WHERE id=? AND vault_id=?", (job_id, vault_id))
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist in this vault", action="List jobs with 'asr job list'.")
        tasks = self.db.query("SELECT * FROM job_tasks WHERE job_id=? ORDER BY seq", (job_id,))
        return job, tasks

    def list_jobs(self, vault_id: str, limit: int = 200, *, state: str = "", kind: str = "",
                  target: str = "") -> list[Row]:
        """Newest first; each given filter must hold. An unknown state is a UsageError."""
        if state and state not in JOB_STATES:
            raise UsageError(f"job state {state!r} is unknown", causes=(f"Job states: {', '.join(JOB_STATES)}.",),
                             action="Pass one of the job states listed.")
        where, args = ["vault_id=?"], [vault_id]
        for column, value in (("state", state), ("kind", kind), ("target", target)):
            if value:
                where.append(f"{column}=?")
                args.append(value)
        limit = limit if 0 < limit <= 10000 else 200
        return self.db.query(f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT ?",
                             (*args, limit))

    def task_bytes(self, job_id: str, seq: int, done: int, total: int) -> None:
        """How much data a running task has moved (``done``) of ``total``: what ``asr ... --wait``
        shows as bytes, rate and time left. Its own short transaction; callers throttle."""
        with self.db.write() as conn:
            conn.execute("UPDATE job_tasks SET bytes_done=?, bytes_total=? WHERE job_id=? AND seq=?",
                         (done, total, job_id, seq))

    def counts(self) -> list[Row]:
        """Jobs (``n``) per vault, kind and state, for the metrics."""
        return self.db.query("SELECT vault_id, kind, state, COUNT(*) AS n FROM jobs GROUP BY vault_id, kind, state")

    def tasks(self, job_id: str) -> list[Row]:
        return self.db.query("SELECT * FROM job_tasks WHERE job_id=? ORDER BY seq", (job_id,))
