"""The runner: carries step jobs (failover operations, vault teardown) forward from what the
metadata DB says, so it resumes after a restart.

Every tick it looks at each InProgress job of its kinds: a Failed task fails the job (the
job's hook puts its VMs back and removes what it made); a tolerant site task that failed or
passed its deadline is skipped; otherwise every not-yet-started task of the lowest
unfinished stage is started. Site steps enqueue a command carrying the item's current epoch
and finish when the provider acknowledges it (``Commands.complete``). Cloud steps run on a
small thread pool; one that was InProgress when the process died is simply run again
(materialising starts the disk over; scripts should be idempotent, as in ASR). A manual
action Suspends the job until resumed. Every write to jobs goes through ``Jobs``.

A cloud step that finishes checks that its job is still InProgress in the same transaction
that records the result, so a job failed meanwhile never gets a VM marked Running.

Several cloud service processes (issue 15): each job runs in one process, the holder of its
lease (``Jobs.claim``: owner and lease_until on the job's row). Every tick renews the leases
of the jobs this runner holds and takes over those whose holder's lease expired; a process
advances only the jobs it holds, so a site command is queued once and a cloud step runs in
one place. A cloud step that was InProgress in a process that died is run again by the new
holder (as after a restart). A step of a process that lost its job (it stalled past its
lease and another took it) records nothing: ``finish`` checks that the job's row still names
this runner in the transaction that records the result, and a materialisation stops at its
next progress report. A failover job is held from its creation by the process it was made
through (``claim_in``). Command expiry and the reaping of deleted recovered VMs run in one
process at a time, under named leases.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asrclock import Clock
from asrerrors import AsrError, EncryptionKeyError, JobFailed, MetadataUnavailable, NotFound, StateConflict
from asrops.environment import seconds
from asrpb import control_pb2
from chunkfmt import BLOCK_SIZE, vault_id_key
from cloudsvc.commands import Commands
from cloudsvc.failover.failback import FailbackServer
from cloudsvc.failover.materialise import check_key, materialise_disk
from cloudsvc.failover.operations import Operations
from cloudsvc.failover.recovered import Recovered
from cloudsvc.failover.steps import Step, StepKind
from cloudsvc.jobs import Jobs
from cloudsvc.leases import Leases
from cloudsvc.lifecycle import ProtectedItems
from cloudsvc.replication import Replication
from metastore.database import Database

log = logging.getLogger(__name__)

TICK_S = 0.2
# A tick only reads and writes job rows (steps run on the pool): a runner that has not
# turned for this long is stuck, and the daemon is restarted by its watchdog.
STUCK_AFTER_S = 120.0
OUTPUT_LIMIT = 8000
# A site command a job waits for fails after this long without an answer (the site is down);
# tolerant steps give up earlier, after their own deadline, and keep their command queued.
SITE_COMMAND_TIMEOUT_S = seconds("ASR_SITE_COMMAND_TIMEOUT")
EXPIRE_EVERY_S = 2.0
# named leases (``cloudsvc.leases``) of the runner's work that runs in one process at a time
EXPIRE_LEASE = "commands.expire"
REAP_LEASE = "recovered.reap"

# A cloud step handler: (job row, context, task index, step) -> None; it records its result
# with Runner.finish (or raises an AsrError, which fails the task).
CloudStep = Callable[[Any, dict[str, Any], int, Step], None]


class Runner:
    def __init__(self, db: Database, clock: Clock, jobs: Jobs, commands: Commands, items: ProtectedItems,
                 replication: Replication, recovered: Recovered, failback: FailbackServer, ops: Operations,
                 stopping: threading.Event, leases: Leases) -> None:
        self.db = db
        # this process's holder id and lease period for jobs; named leases for the singletons
        self.leases = leases
        self.holder = leases.holder
        self.clock = clock
        self.jobs = jobs
        self.commands = commands
        self.items = items
        self.replication = replication
        self.recovered = recovered
        self.failback = failback
        self.ops = ops
        self.stopping = stopping
        self.kinds: set[str] = set()
        self.handlers: dict[StepKind, CloudStep] = {
            StepKind.MATERIALISE: self._step_materialise,
            StepKind.DELETE_RECOVERED: self._step_delete_recovered,
            StepKind.STOP_RECOVERED: self._step_stop_recovered,
            StepKind.COMMIT: self._step_commit,
            StepKind.SCRIPT: self._step_script,
        }
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="jobs")
        # cloud steps running on this process's pool; a step InProgress in the DB but not here
        # ran in a process that died (or before a restart) and is run again
        self.running: set[tuple[str, int]] = set()
        # jobs this process held and lost to another: their running steps stop and record nothing
        self.lost: set[str] = set()
        self._held: set[str] = set()   # the jobs the last tick held
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._expired_at = 0.0
        self._wake = threading.Event()

    def add_kinds(self, kinds: set[str] | tuple[str, ...], handlers: dict[StepKind, CloudStep] | None = None) -> None:
        """Run jobs of ``kinds`` too, with these cloud step handlers (the composition root wires it)."""
        self.kinds.update(kinds)
        self.handlers.update(handlers or {})

    def start(self, beat: Callable[[], None] = lambda: None) -> None:
        """Run the jobs; ``beat`` is called on every turn (the daemon core's watchdog: a
        runner that stops turning stops the pings, see ``asrops.lifecycle``)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, args=(beat,), name="job-runner", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Turn now rather than at the next tick: a job was created or a site command it waits
        for completed (the tick's 0–0.2 s was most of a site-to-site failover's time)."""
        self._wake.set()

    def _loop(self, beat: Callable[[], None]) -> None:
        while not self.stopping.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            if self.stopping.is_set():
                break
            beat()
            try:
                self.tick()
            except MetadataUnavailable as err:   # PostgreSQL away: the next tick tries again, no traceback
                log.warning("job runner waits for the metadata store: %s", err)
            except Exception:  # noqa: BLE001 - keep the runner alive; the error is logged
                log.exception("job runner tick failed")

    def stop(self) -> None:
        with self._lock:  # steps still on the pool stop at their next report: others take over
            self.lost.update(self._held)
        self._wake.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:  # another process takes this one's jobs over at once rather than after the lease
            self.jobs.release(self.holder)
            for name in (EXPIRE_LEASE, REAP_LEASE):
                self.leases.release(name)
        except AsrError:
            log.exception("releasing the job leases at shutdown failed")

    def claim_in(self, conn: Any, job_id: str) -> None:
        """Hold a job just created in ``conn``'s transaction: it starts here at once, without
        waiting for any process's turn, and one given a customer-managed key must run here
        (the key is in this process's memory only)."""
        self.jobs.claim_in(conn, job_id, self.holder, self.leases.period)

    def tick(self) -> None:
        now = self.clock.monotonic()
        if now - self._expired_at >= EXPIRE_EVERY_S:
            self._expired_at = now
            if self.leases.acquire(EXPIRE_LEASE):
                self.commands.expire(SITE_COMMAND_TIMEOUT_S)
        held = self.jobs.claim(tuple(sorted(self.kinds)), self.holder, self.leases.period)
        ids = {r["id"] for r in held}
        # a job this process ran that is still running but no longer held by it was taken over
        # (this process stalled past its lease): its steps here stop and record nothing
        lost = {j for j in self._held - ids if self.jobs.owner_of(j) not in ("", self.holder)}
        self._held = ids
        if lost:
            log.warning("jobs taken over by another cloud service process", extra={"fields": {"jobs": sorted(lost)}})
            with self._lock:
                self.lost.update(lost)
        for job in held:
            self.advance(job)
        if self.leases.acquire(REAP_LEASE):
            self.recovered.reap()
        self.ops.forget_ended_keys()

    # ---- one job ----------------------------------------------------------------------------
    def advance(self, job: Any) -> None:
        ctx = json.loads(job["context"])
        steps = [Step.from_dict(d) for d in ctx["steps"]]
        tasks = self.jobs.tasks(job["id"])
        now = self.clock.now()
        for t in tasks:
            step = steps[t["seq"]]
            if not step.tolerant:
                continue
            late = t["state"] == "InProgress" and t["command_id"] and now - t["started_at"] > step.deadline_s
            if t["state"] == "Failed" or late:
                note = (f"the site did not answer within {step.deadline_s:.0f} s" if late
                        else f"the site reported: {t['output'] or _message(t['error'])}")
                with self.db.write() as conn:
                    self.jobs.skip_task(conn, job["id"], t["seq"], f"skipped ({note}); continuing")
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
        stage = min(steps[t["seq"]].stage for t in open_tasks)
        for t in open_tasks:
            step = steps[t["seq"]]
            if step.stage != stage:
                continue
            key = (job["id"], t["seq"])
            if t["state"] == "NotStarted" or (t["state"] == "InProgress" and not t["command_id"]
                                              and key not in self.running and not step.site):
                self._start(job, ctx, t["seq"], step, restart=t["state"] == "InProgress")

    def _start(self, job: Any, ctx: dict[str, Any], seq: int, step: Step, restart: bool) -> None:
        vm = ctx.get("vms", {}).get(step.vm, {})
        if step.kind == StepKind.MANUAL:
            with self.db.write() as conn:
                self.jobs.suspend_task(conn, job["id"], seq, step.instructions)
            return
        if step.site:
            try:
                with self.db.write() as conn:
                    cmd, epoch = self._command(conn, job, ctx, vm, step)
                    provider = vm["recovery_provider"] if step.on_recovery_site else vm["provider"]
                    cid = self.commands.enqueue(conn, job["vault_id"], provider, cmd, epoch=epoch)
                    self.jobs.start_task(conn, job["id"], seq, cid)
            except AsrError as err:
                with self.db.write() as conn:
                    self.jobs.start_task(conn, job["id"], seq)
                    self.jobs.finish_task(conn, job["id"], seq, False, "", err)
                return
            self.commands.notify()
            return
        with self.db.write() as conn:
            if restart:
                self.jobs.restart_task(conn, job["id"], seq)
            elif not self.jobs.start_task(conn, job["id"], seq):
                return
        with self._lock:
            self.running.add((job["id"], seq))
        self.pool.submit(self._run_cloud_step, job["id"], seq)

    def _command(self, conn: Any, job: Any, ctx: dict[str, Any], vm: dict[str, Any], step: Step
                 ) -> tuple[control_pb2.Command, int]:
        """The site command of a step, and the epoch it carries (the item's, read in the same
        transaction that queues the command)."""
        item = self.items.get(job["vault_id"], vm["vm_id"], conn)
        if item is None:
            raise NotFound(f"VM {vm['name']} is no longer protected")
        if step.kind == StepKind.REPLICA:
            point = step.point
            if point == "replicated":
                point = self._replicated_point(job["id"], ctx, vm["vm_id"])
            return self.ops.site.command(conn, job["vault_id"], vm, step, point)
        if step.kind == StepKind.FAILBACK and vm.get("s2s"):
            return control_pb2.Command(failback=self.ops.site.failback(vm)), item.epoch
        if step.kind == StepKind.REVERSE:
            return self.ops.site.reverse_command(vm, item, step.action), item.epoch
        if step.kind == StepKind.REPLICATE:
            cmd = control_pb2.Command(replicate_now=control_pb2.ReplicateNow(
                host=vm["host"], vm_id=vm["vm_id"], vm_name=vm["name"], shutdown_first=True))
        elif step.kind == StepKind.POWER:
            cmd = control_pb2.Command(power_vm=control_pb2.PowerVm(
                host=vm["host"], vm_id=vm["vm_id"], vm_name=vm["name"], action=step.action))
        elif step.kind == StepKind.DISABLE:
            cmd = control_pb2.Command(disable_replication=control_pb2.DisableReplication(
                host=vm["host"], vm_id=vm["vm_id"], vm_name=vm["name"]))
        elif step.kind == StepKind.GRANT:
            cmd = self.ops.grant_command(conn, job["vault_id"], vm)
        elif step.kind == StepKind.FAILBACK:
            rvms = self.recovered.of_source(job["vault_id"], vm["vm_id"], "failover")
            if not rvms:
                raise NotFound(f"VM {vm['name']} has no recovered VM to fail back from")
            session = "fb-" + uuid.uuid4().hex[:16]
            self.failback.open(conn, session, job["vault_id"], vm["vm_id"], rvms[-1]["id"], vm["host"])
            cmd = control_pb2.Command(failback=control_pb2.Failback(
                host=vm["host"], vm_id=vm["vm_id"], vm_name=vm["name"], session_id=session, start_vm=True))
        else:
            raise AssertionError(f"not a site step: {step.kind}")
        return cmd, item.epoch

    # ---- cloud steps ------------------------------------------------------------------------
    def _run_cloud_step(self, job_id: str, seq: int) -> None:
        with self._lock:
            self.lost.discard(job_id)  # held again (the claim that started this step took it)
        try:
            job = self.db.one("SELECT * FROM jobs WHERE id=?", (job_id,))
            if job is None or job["state"] != "InProgress":
                return
            ctx = json.loads(job["context"])
            step = Step.from_dict(ctx["steps"][seq])
            try:
                self.handlers[step.kind](job, ctx, seq, step)
            except MetadataUnavailable as err:
                # not the step's failure: it stays unfinished and runs again once the store is back
                # (steps are re-run after a restart anyway)
                log.warning("job %s step %d waits for the metadata store: %s", job_id, seq, err)
            except AsrError as err:
                self.finish(job_id, seq, False, getattr(err, "output", ""), err)
            except OSError as exc:
                from asrerrors import DiskFull, StorageError

                cls = DiskFull if exc.errno == 28 else StorageError
                self.finish(job_id, seq, False, "", cls(f"{step.name}: {exc.strerror or exc}"))
            except Exception as exc:  # noqa: BLE001 - any failure fails the task, with its text
                log.exception("job step failed")
                self.finish(job_id, seq, False, "", AsrError(f"{type(exc).__name__}: {exc}"))
        finally:
            with self._lock:
                self.running.discard((job_id, seq))

    def finish(self, job_id: str, seq: int, ok: bool, output: str, error: AsrError | None = None,
               then: Any = None) -> bool:
        """Record a cloud step's result if its job is still running; ``then(conn)`` runs in the
        same transaction. Returns False when the job ended meanwhile (nothing recorded)."""
        with self.db.write() as conn:
            if self.jobs.state_of(conn, job_id) not in ("InProgress", "Suspended"):
                return False
            if not self.jobs.held_in(conn, job_id, self.holder):
                log.warning("a job step finished after its job was taken over by another process; "
                            "its result is dropped", extra={"fields": {"job": job_id, "seq": seq}})
                return False
            if then is not None:
                then(conn)
            self.jobs.finish_task(conn, job_id, seq, ok, output[-OUTPUT_LIMIT:], error)
        return True

    def _step_materialise(self, job: Any, ctx: dict[str, Any], seq: int, step: Step) -> None:
        vault_id = job["vault_id"]
        vm = ctx["vms"][step.vm]
        spec = step.point
        if spec == "replicated":
            spec = self._replicated_point(job["id"], ctx, vm["vm_id"])
        store, point = self.replication.choose_point(vault_id, vm["vm_id"], vm["storage"], spec, vm["name"])
        key = self.ops.keys.get(job["id"])
        if vm["encrypt"] and key is None:
            raise EncryptionKeyError(
                f"VM {vm['name']} is encrypted and the customer-managed key is no longer in memory",
                causes=("The cloud service restarted during the job; the key is never stored.",),
                action="Run the operation again with --encryption-key-file.")
        keys = check_key(store, point, vault_id_key(vault_id), key)
        existing = self.recovered.being_made(job["id"], vm["vm_id"])
        if existing is not None:
            rvm_id, vm_dir = existing["id"], existing["dir"]  # resumed after a restart: start the disks over
            if existing["point_id"] != point.point_id:
                with self.db.write() as conn:
                    self.recovered.set_point(conn, rvm_id, point.point_id)
        else:
            with self.db.write() as conn:
                rvm_id = self.recovered.begin(
                    conn, vault_id, source_vm_id=vm["vm_id"], source_name=vm["name"], kind=step.rkind,
                    storage=vm["storage"], size=vm["size"], network=ctx["network"], subnet=ctx["subnet"],
                    job_id=job["id"], point_id=point.point_id)
            row = self.recovered.get(rvm_id)
            assert row is not None
            vm_dir = row["dir"]
        # The row pins the point against retention; retention may have run between choosing the
        # point and pinning it, so make sure it is still there (NotFound fails the task cleanly).
        store.get_point(point.point_id)
        os.makedirs(vm_dir, exist_ok=True)
        disks = []
        written = 0
        total = sum(d.virtual_size for d in point.disks)
        for disk in point.disks:
            path = os.path.join(vm_dir, f"disk{disk.disk_index}.vhd")
            res = materialise_disk(store, point, disk.disk_index, path, keys,
                                   progress=self._bytes_progress(job["id"], seq, point, disk.disk_index, total))
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

        self.finish(job["id"], seq, True, output, then=running)

    def _bytes_progress(self, job_id: str, seq: int, point: Any, disk_index: int,
                        total: int) -> Callable[[int, int], None]:
        """A materialise progress callback that records the bytes of the point's disks done so
        far in the job's task (what ``--wait`` shows), at most once a second."""
        before = sum(d.virtual_size for d in point.disks if d.disk_index < disk_index)
        size = next(d.virtual_size for d in point.disks if d.disk_index == disk_index)
        last = [0.0]

        def report(blocks_done: int, blocks_total: int) -> None:
            with self._lock:
                lost = job_id in self.lost
            now = self.clock.monotonic()
            if not lost and blocks_done < blocks_total and now - last[0] < 1.0:
                return
            last[0] = now
            # once a second, the job's row too: a whole process that stalled (and was taken
            # over) stops writing within a second of going on, before its runner turns
            if lost or self.jobs.owner_of(job_id) not in ("", self.holder):
                # another process runs the job now and starts this disk over
                raise JobFailed(f"job {job_id} was taken over by another cloud service process")
            done = before + min(size, blocks_done * BLOCK_SIZE)
            self.jobs.task_bytes(job_id, seq, done, total)

        return report

    def _replicated_point(self, job_id: str, ctx: dict[str, Any], vm_id: str) -> str:
        for t in self.jobs.tasks(job_id):
            step = Step.from_dict(ctx["steps"][t["seq"]])
            if step.kind == StepKind.REPLICATE and step.vm == vm_id:
                point = str(t["output"]).strip()
                if t["state"] != "Succeeded" or not point:
                    raise StateConflict(f"the final replication of VM {vm_id} produced no point")
                return point.split()[-1] if " " in point else point
        raise StateConflict("the job has no final replication step")

    def _step_delete_recovered(self, job: Any, ctx: dict[str, Any], seq: int, step: Step) -> None:
        vm = ctx["vms"][step.vm]
        rows = [r for r in self.recovered.of_source(job["vault_id"], vm["vm_id"], step.rkind)
                if not (step.keep_own and r["job_id"] == job["id"])]

        def delete(conn: Any) -> None:
            for r in rows:
                self.recovered.set_state(conn, r["id"], "Deleting")

        self.finish(job["id"], seq, True, f"deleting {len(rows)} recovered VM(s) and their disks", then=delete)
        self.recovered.reap()

    def _step_stop_recovered(self, job: Any, ctx: dict[str, Any], seq: int, step: Step) -> None:
        vm = ctx["vms"][step.vm]
        rows = self.recovered.of_source(job["vault_id"], vm["vm_id"], "failover")
        if not rows:
            raise NotFound(f"VM {vm['name']} has no recovered VM to fail back from")

        def stop(conn: Any) -> None:
            for r in rows:
                self.recovered.set_state(conn, r["id"], "Stopped")

        self.finish(job["id"], seq, True, f"recovered VM {rows[-1]['name']} shut down", then=stop)

    def _step_commit(self, job: Any, ctx: dict[str, Any], seq: int, step: Step) -> None:
        vm = ctx["vms"][step.vm]
        self.finish(job["id"], seq, True, f"failover of {vm['name']} committed")

    def _step_script(self, job: Any, ctx: dict[str, Any], seq: int, step: Step) -> None:
        try:
            r = subprocess.run(list(step.argv), capture_output=True, text=True, timeout=step.timeout_seconds,
                               stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as exc:
            out = _text(exc.stdout) + _text(exc.stderr)
            err = JobFailed(f"script {step.action} did not finish within {step.timeout_seconds:.0f} s",
                            details=[out[-500:]] if out else ())
            self.finish(job["id"], seq, False, out, err)
            return
        except OSError as exc:
            self.finish(job["id"], seq, False, "", JobFailed(f"script {step.action} could not run: {exc}"))
            return
        out = r.stdout + r.stderr
        if r.returncode != 0:
            err = JobFailed(f"script {step.action} exited with {r.returncode}", details=[out[-500:]] if out else (),
                            action="Fix the script (its output is in the job) and run the operation again.")
            self.finish(job["id"], seq, False, out, err)
            return
        self.finish(job["id"], seq, True, out)


def _message(error_json: str) -> str:
    try:
        return str(json.loads(error_json).get("message", ""))
    except (ValueError, AttributeError):
        return error_json


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)
