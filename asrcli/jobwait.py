"""Waiting for jobs: ``--wait`` on any command that starts one, and ``asr job wait``."""

from __future__ import annotations

import sys
import time
from typing import Any

from asrcli.client import Client
from asrcli.output import to_doc
from asrerrors import JobFailed, NotFound, by_code
from asrpb import operator_pb2

TERMINAL = ("Succeeded", "Failed", "Cancelled")


def wait_job(c: Client, vault: str, job_id: str, timeout: float, quiet: bool, gone_ok: bool = False
             ) -> dict[str, Any]:
    """Poll the job until it ends, drawing progress on stderr; raise JobFailed if it failed.
    With ``gone_ok`` (a vault teardown) the vault disappearing with its job is success."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            job = c.call(c.protection.GetJob, operator_pb2.JobRef(vault=vault, id=job_id))
        except NotFound:
            if not gone_ok:
                raise
            if not quiet:
                print(f"job {job_id}: vault {vault} deleted", file=sys.stderr, flush=True)
            return {"id": job_id, "state": "Succeeded", "vault": vault, "deleted": True}
        line = f"job {job.id} {job.kind} {job.target}: {job.state} {int(job.progress * 100)}%"
        running = [t.name for t in job.tasks if t.state in ("InProgress", "Suspended")]
        if running:
            line += " — " + "; ".join(running)
        if not quiet and line != last:
            print(line, file=sys.stderr, flush=True)
            last = line
        if job.state in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise JobFailed(f"job {job_id} did not finish within {timeout:.0f}s (state {job.state})",
                            action=f"Follow it with 'asr job wait {job_id}' or 'asr job show {job_id}'.")
        time.sleep(0.2)
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
