"""The runner: carries failover jobs forward from what the metadata DB says, so it resumes
after a restart.

Every tick it looks at each InProgress failover job: a Failed task fails the job (the job's
hook puts its VMs back and removes what it made); otherwise every not-yet-started task of the
lowest unfinished stage is started. Site steps enqueue a command and finish when the provider
acknowledges it (``Commands.complete``). Cloud steps run on a small thread pool; one that was
InProgress when the process died is simply run again (materialising starts the disk over;
scripts should be idempotent, as in ASR). A manual action Suspends the job until resumed.

A cloud step that finishes checks that its job is still InProgress in the same transaction
that records the result, so a job failed meanwhile never gets a VM marked Running.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asrerrors import AsrError, EncryptionKeyError, JobFailed, NotFound, StateConflict
from asrpb import control_pb2
from chunkfmt import vault_id_key
from cloudsvc.failover.materialise import check_key, materialise_disk
from cloudsvc.failover.operations import KINDS, Operations
from cloudsvc.failover.recovered import Recovered

log = logging.getLogger(__name__)

TICK_S = 0.2
OUTPUT_LIMIT = 8000
# Test knob: seconds to sleep per materialised disk window, to make "mid-job" observable.
SLOW_S = float(os.environ.get("ASR_TEST_MATERIALISE_DELAY", "0") or 0)


class Runner:
    def __init__(self, svc: Any, ops: Operations, recovered: Recovered) -> None:
        self.svc = svc
        self.db = svc.db
        self.jobs = svc.jobs
        self.ops = ops
        self.recovered = recovered
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="failover")
        self.running: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="failover-runner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self.svc.stopping.wait(TICK_S):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - keep the runner alive; the error is logged
                log.exception("failover runner tick failed")

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def tick(self) -> None:
        marks = ",".join("?" * len(KINDS))
        for job in self.db.query(f"SELECT * FROM jobs WHERE state='InProgress' AND kind IN ({marks})",
                                 tuple(sorted(KINDS))):
            self.advance(job)
        self.recovered.reap()

    # ---- one job ----------------------------------------------------------------------------
    def advance(self, job: Any) -> None:
        ctx = json.loads(job["context"])
        steps = ctx["steps"]
        tasks = self.jobs.tasks(job["id"])
        now = self.svc.clock.now()
        for t in tasks:
            step = steps[t["seq"]]
            if not step.get("tolerant"):
                continue
            late = t["state"] == "InProgress" and t["command_id"] and now - t["started_at"] > step["deadline_s"]
            if t["state"] == "Failed" or late:
                note = (f"the site did not answer within {step['deadline_s']:.0f} s" if late
                        else f"the site reported: {t['output'] or t['error']}")
                with self.db.write() as conn:
                    # detach the command: a late acknowledgement must not touch the task again
                    conn.execute("UPDATE job_tasks SET state='Succeeded', ended_at=?, command_id='', output=?,"
                                 " error='' WHERE job_id=? AND seq=?",
                                 (now, f"skipped ({note}); continuing", job["id"], t["seq"]))
                return
        failed = [t for t in tasks if t["state"] == "Failed"]
        if failed:
            t = failed[0]
            detail = json.loads(t["error"]) if t["error"] else {}
            err = JobFailed(f"task '{t['name']}' failed: {detail.get('message', 'see the task')}",
                            details=detail.get("details", []))
            with self.db.write() as conn:
                self.jobs.fail_job(conn, job["id"], err)
            return
        open_tasks = [t for t in tasks if t["state"] != "Succeeded"]
        if not open_tasks:
            return
        stage = min(steps[t["seq"]]["stage"] for t in open_tasks)
        for t in open_tasks:
            step = steps[t["seq"]]
            if step["stage"] != stage:
                continue
            key = (job["id"], t["seq"])
            if t["state"] == "NotStarted" or (t["state"] == "InProgress" and not t["command_id"]
                                              and key not in self.running and not _is_site(step)):
                self._start(job, ctx, t["seq"], step)

    def _start(self, job: Any, ctx: dict[str, Any], seq: int, step: dict[str, Any]) -> None:
        kind = step["kind"]
        vm = ctx["vms"].get(step["vm"], {})
        if kind == "manual":
            with self.db.write() as conn:
                conn.execute("UPDATE job_tasks SET state='Suspended', started_at=?, output=? WHERE job_id=? AND"
                             " seq=?", (self.svc.clock.now(), step.get("instructions", ""), job["id"], seq))
                conn.execute("UPDATE jobs SET state='Suspended' WHERE id=? AND state='InProgress'", (job["id"],))
            return
        if _is_site(step):
            try:
                cmd = self._command(job, vm, step)
            except AsrError as err:
                with self.db.write() as conn:
                    self.jobs.finish_task(conn, job["id"], seq, False, "", err)
                return
            with self.db.write() as conn:
                cid = self.svc.commands.enqueue(conn, job["vault_id"], vm["provider"], cmd)
                conn.execute("UPDATE job_tasks SET state='InProgress', started_at=?, command_id=? WHERE job_id=?"
                             " AND seq=? AND state='NotStarted'", (self.svc.clock.now(), cid, job["id"], seq))
            self.svc.commands.notify()
            return
        with self.db.write() as conn:
            conn.execute("UPDATE job_tasks SET state='InProgress', started_at=? WHERE job_id=? AND seq=?",
                         (self.svc.clock.now(), job["id"], seq))
        with self._lock:
            self.running.add((job["id"], seq))
        self.pool.submit(self._run_cloud_step, job["id"], seq)

    def _command(self, job: Any, vm: dict[str, Any], step: dict[str, Any]) -> control_pb2.Command:
        kind = step["kind"]
        if kind == "replicate":
            return control_pb2.Command(replicate_now=control_pb2.ReplicateNow(
                host=vm["host"], vm_id=vm["vm_id"], vm_name=vm["name"], shutdown_first=True))
        if kind == "power":
            return control_pb2.Command(power_vm=control_pb2.PowerVm(
                host=vm["host"], vm_id=vm["vm_id"], vm_name=vm["name"], action=step["action"]))
        if kind == "disable":
            return control_pb2.Command(disable_replication=control_pb2.DisableReplication(
                host=vm["host"], vm_id=vm["vm_id"], vm_name=vm["name"]))
        if kind == "failback":
            rvms = self.recovered.of_source(job["vault_id"], vm["vm_id"], "failover")
            if not rvms:
                raise NotFound(f"VM {vm['name']} has no recovered VM to fail back from")
            session = "fb-" + uuid.uuid4().hex[:16]
            with self.db.write() as conn:
                conn.execute("INSERT INTO failback_sessions(id, vault_id, vm_id, recovered_id, host, created_at)"
                             " VALUES (?,?,?,?,?,?)", (session, job["vault_id"], vm["vm_id"], rvms[-1]["id"],
                                                       vm["host"], self.svc.clock.now()))
            return control_pb2.Command(failback=control_pb2.Failback(
                host=vm["host"], vm_id=vm["vm_id"], vm_name=vm["name"], session_id=session, start_vm=True))
        raise AssertionError(f"not a site step: {kind}")

    # ---- cloud steps ------------------------------------------------------------------------
    def _run_cloud_step(self, job_id: str, seq: int) -> None:
        try:
            job = self.db.one("SELECT * FROM jobs WHERE id=?", (job_id,))
            if job is None or job["state"] != "InProgress":
                return
            ctx = json.loads(job["context"])
            step = ctx["steps"][seq]
            try:
                fn = getattr(self, "_step_" + step["kind"])
                fn(job, ctx, seq, step)
            except AsrError as err:
                self._finish(job_id, seq, False, getattr(err, "output", ""), err)
            except Exception as exc:  # noqa: BLE001 - any failure fails the task, with its text
                log.exception("failover step failed")
                self._finish(job_id, seq, False, "", AsrError(f"{type(exc).__name__}: {exc}"))
        finally:
            with self._lock:
                self.running.discard((job_id, seq))

    def _finish(self, job_id: str, seq: int, ok: bool, output: str, error: AsrError | None = None,
                then: Any = None) -> bool:
        """Record a cloud step's result if its job is still running; ``then(conn)`` runs in the
        same transaction. Returns False when the job ended meanwhile (nothing recorded)."""
        with self.db.write() as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None or row["state"] not in ("InProgress", "Suspended"):
                return False
            if then is not None:
                then(conn)
            self.jobs.finish_task(conn, job_id, seq, ok, output[-OUTPUT_LIMIT:], error)
        return True

    def _step_materialise(self, job: Any, ctx: dict[str, Any], seq: int, step: dict[str, Any]) -> None:
        vault_id = job["vault_id"]
        vm = ctx["vms"][step["vm"]]
        spec = step["point"]
        if spec == "replicated":
            spec = self._replicated_point(job["id"], ctx, vm["vm_id"])
        store, point = self.ops.resolve_point(vault_id, vm, spec)
        key = self.ops.keys.get(job["id"])
        if vm["encrypt"] and key is None:
            raise EncryptionKeyError(
                f"VM {vm['name']} is encrypted and the customer-managed key is no longer in memory",
                causes=("The cloud service restarted during the job; the key is never stored.",),
                action="Run the operation again with --encryption-key-file.")
        keys = check_key(store, point, vault_id_key(vault_id), key)
        existing = self.db.one("SELECT * FROM recovered_vms WHERE job_id=? AND source_vm_id=? AND state='Creating'",
                               (job["id"], vm["vm_id"]))
        if existing is not None:
            rvm_id, vm_dir = existing["id"], existing["dir"]  # resumed after a restart: start the disks over
        else:
            with self.db.write() as conn:
                rvm_id = self.recovered.begin(
                    conn, vault_id, source_vm_id=vm["vm_id"], source_name=vm["name"], kind=step["rkind"],
                    storage=vm["storage"], size=vm["size"], network=ctx["network"], subnet=ctx["subnet"],
                    job_id=job["id"], point_id=point.point_id)
            row = self.recovered.get(rvm_id)
            assert row is not None
            vm_dir = row["dir"]
        if existing is not None and existing["point_id"] != point.point_id:
            with self.db.write() as conn:
                conn.execute("UPDATE recovered_vms SET point_id=? WHERE id=?", (point.point_id, rvm_id))
        # The row pins the point against retention; retention may have run between resolving the
        # point and pinning it, so make sure it is still there (NotFound fails the task cleanly).
        store.get_point(point.point_id)
        os.makedirs(vm_dir, exist_ok=True)
        disks = []
        written = 0
        for disk in point.disks:
            path = os.path.join(vm_dir, f"disk{disk.disk_index}.vhd")
            progress = (lambda done, total: time.sleep(SLOW_S)) if SLOW_S else None
            res = materialise_disk(store, point, disk.disk_index, path, keys, progress)
            disks.append({"index": disk.disk_index, "path": res.path, "virtual_size": res.virtual_size})
            written += res.bytes_written
        row = self.recovered.get(rvm_id)
        assert row is not None
        output = (f"recovered VM {row['name']} ({rvm_id}) from point {point.point_id}: {len(disks)} disks, "
                  f"{written} bytes written; size {vm['size']}"
                  + (f", address {row['address']} in {row['network']}/{row['subnet']}" if row["address"] else
                     ", no network"))

        def running(conn: Any) -> None:
            self.recovered.set_state(conn, rvm_id, "Running", point_id=point.point_id, disks=json.dumps(disks))

        self._finish(job["id"], seq, True, output, then=running)

    def _replicated_point(self, job_id: str, ctx: dict[str, Any], vm_id: str) -> str:
        for t in self.jobs.tasks(job_id):
            step = ctx["steps"][t["seq"]]
            if step["kind"] == "replicate" and step["vm"] == vm_id:
                point = str(t["output"]).strip()
                if t["state"] != "Succeeded" or not point:
                    raise StateConflict(f"the final replication of VM {vm_id} produced no point")
                return point.split()[-1] if " " in point else point
        raise StateConflict("the job has no final replication step")

    def _step_delete_recovered(self, job: Any, ctx: dict[str, Any], seq: int, step: dict[str, Any]) -> None:
        vm = ctx["vms"][step["vm"]]
        rows = [r for r in self.recovered.of_source(job["vault_id"], vm["vm_id"], step["rkind"])
                if not (step.get("keep_own") and r["job_id"] == job["id"])]

        def delete(conn: Any) -> None:
            for r in rows:
                self.recovered.set_state(conn, r["id"], "Deleting")

        self._finish(job["id"], seq, True, f"deleting {len(rows)} recovered VM(s) and their disks", then=delete)
        self.recovered.reap()

    def _step_stop_recovered(self, job: Any, ctx: dict[str, Any], seq: int, step: dict[str, Any]) -> None:
        vm = ctx["vms"][step["vm"]]
        rows = self.recovered.of_source(job["vault_id"], vm["vm_id"], "failover")
        if not rows:
            raise NotFound(f"VM {vm['name']} has no recovered VM to fail back from")

        def stop(conn: Any) -> None:
            for r in rows:
                self.recovered.set_state(conn, r["id"], "Stopped")

        self._finish(job["id"], seq, True, f"recovered VM {rows[-1]['name']} shut down", then=stop)

    def _step_commit(self, job: Any, ctx: dict[str, Any], seq: int, step: dict[str, Any]) -> None:
        vm = ctx["vms"][step["vm"]]
        self._finish(job["id"], seq, True, f"failover of {vm['name']} committed")

    def _step_script(self, job: Any, ctx: dict[str, Any], seq: int, step: dict[str, Any]) -> None:
        argv = list(step["argv"])
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=step["timeout_seconds"],
                               stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as exc:
            out = _text(exc.stdout) + _text(exc.stderr)
            err = JobFailed(f"script {step['action']} did not finish within {step['timeout_seconds']:.0f} s",
                            details=[out[-500:]] if out else ())
            self._finish(job["id"], seq, False, out, err)
            return
        except OSError as exc:
            self._finish(job["id"], seq, False, "", JobFailed(f"script {step['action']} could not run: {exc}"))
            return
        out = r.stdout + r.stderr
        if r.returncode != 0:
            err = JobFailed(f"script {step['action']} exited with {r.returncode}", details=[out[-500:]] if out else (),
                            action="Fix the script (its output is in the job) and run the operation again.")
            self._finish(job["id"], seq, False, out, err)
            return
        self._finish(job["id"], seq, True, out)


def _is_site(step: dict[str, Any]) -> bool:
    return step["kind"] in ("replicate", "power", "disable", "failback")


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)
