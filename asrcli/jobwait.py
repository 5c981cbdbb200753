"""Waiting for jobs: ``--wait`` on any command that starts one, and ``asr job wait``.

Progress goes to stderr (see :mod:`asrcli.progress`). A job that stops at a manual action
of a recovery plan (state Suspended) prints the action's instructions and the command that
resumes it, once, even with ``--output json`` (it is an instruction, not progress); the
wait goes on, so the operator can carry out the action and resume the job from another
shell, or stop waiting with Ctrl-C (the job stays suspended).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from asrcli.client import Client
from asrcli.output import to_doc
from asrcli.progress import Bar, bar_wanted
from asrerrors import JobFailed, NotFound, by_code
from asrpb import operator_pb2

TERMINAL = ("Succeeded", "Failed", "Cancelled")


def job_result(c: Client, a: argparse.Namespace, ref: operator_pb2.JobRef) -> Any:
    """What a command that started a job answers: the job's id, or with ``--wait`` the ended job."""
    if getattr(a, "wait", False):
        doc = wait_job(c, a, ref.id)
        return doc, lambda d: print(f"job {ref.id} succeeded")
    return {"job_id": ref.id}, lambda d: print(f"job {ref.id} started; follow it with: asr job wait {ref.id}")


def wait_job(c: Client, a: argparse.Namespace, job_id: str, gone_ok: bool = False, vault: str = "") -> dict[str, Any]:
    """Poll the job until it ends, drawing progress on stderr; raise JobFailed if it failed.
    With ``gone_ok`` (a vault teardown) the vault disappearing with its job is success."""
    vault = vault or a.vault
    quiet = bool(a.json)
    a.waiting_for = job_id   # named if the operator interrupts the wait
    started = time.monotonic()
    deadline = started + a.timeout
    bar = Bar(f"job {job_id}") if bar_wanted(quiet) else None
    last = ""
    told: set[str] = set()
    try:
        while True:
            try:
                job = c.call(c.protection.GetJob, operator_pb2.JobRef(vault=vault, id=job_id))
            except NotFound:
                if not gone_ok:
                    raise
                _say(bar, quiet, f"job {job_id}: vault {vault} deleted")
                return {"id": job_id, "state": "Succeeded", "vault": vault, "deleted": True}
            running = [t.name for t in job.tasks if t.state in ("InProgress", "Suspended")]
            for t in job.tasks:
                if t.state == "Suspended" and t.name not in told:
                    told.add(t.name)
                    msg = (f"job {job.id} is waiting for a manual action: {t.name}\n  {t.output}\n"
                           f"when it is done, resume the job: asr job resume {job.id} --vault {vault}")
                    if bar is not None:
                        bar.write(msg)
                    else:
                        print(msg, file=sys.stderr, flush=True)
            if bar is not None:
                bar.update(done_bytes=job.bytes_done, total_bytes=job.bytes_total, fraction=job.progress,
                           note=f"{job.state}" + (f": {running[0]}" if running else ""))
            else:
                line = f"job {job.id} {job.kind} {job.target}: {job.state} {int(job.progress * 100)}%"
                if job.bytes_total:
                    line += f" ({job.bytes_done} of {job.bytes_total} bytes)"
                if running:
                    line += " — " + "; ".join(running)
                if line != last:
                    _say(None, quiet, line)
                    last = line
            if job.state in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise JobFailed(f"job {job_id} did not finish within {a.timeout:.0f}s (state {job.state})",
                                action=f"Follow it with 'asr job wait {job_id}' or 'asr job show {job_id}'.")
            # a quick job (a site-to-site failover takes tenths of a second) is seen ending at
            # once; a long one is asked about less often
            time.sleep(0.05 if time.monotonic() - started < 2.0 else 0.25)
    finally:
        if bar is not None:
            bar.close()
    doc = to_doc(job)
    if job.state != "Succeeded":
        err = job.error
        cls = by_code(err.code) if err.code else JobFailed
        raise JobFailed(
            f"job {job.id} ({job.kind} {job.target}) {job.state.lower()}: {err.message or 'see its tasks'}",
            causes=list(err.possible_causes) or [f"failing error code: {cls.code}"],
            action=err.recommended_action or f"Show the job with 'asr job show {job.id}'.",
        )
    return doc


def _say(bar: Bar | None, quiet: bool, text: str) -> None:
    if bar is not None:
        bar.write(text)
    elif not quiet:
        print(text, file=sys.stderr, flush=True)


def add_wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="show progress until the job ends; fail if it fails")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most (with --wait)")
