"""The agent's replication engine: a cycle per protected VM on the policy's schedule.

The schedule (apscheduler, real time): every VM in ``Settings`` gets an interval job at its
copy frequency. Its first run is the policy's start: ``now``, or the first ``HH:MM`` (UTC)
at or after protection was enabled (if that moment has passed, at once). A sync job picks up
VMs enabled or disabled since. One VM never runs two cycles at once (a lock per VM shared
with ``replicate_now``); a cycle that fails is retried at the next interval and its error is
reported to the cloud, where it shows in the VM's health.

App-consistent points: a cycle is app-consistent when the policy asks for them and both the
last acknowledged app-consistent point and the last failed quiesce attempt are at least
``app_consistent_hours`` old (by the injectable clock): a broken hook is tried once per slot,
not every cycle. When the hook fails the cycle ships a crash-consistent point and the engine
reports ``ProgressReport.warning`` with code ASR-0045; the next app-consistent point reports
an empty warning, which clears it. Every report carries the VM's epoch and current warning.
A failed cycle reports its error, which the vault clears when it records the next point; a
site-to-site VM's points are recorded by its recovery host, so each of its cycles that
succeeds reports (without an error) instead.

Fencing (``agent.fencing``): every session carries the epoch this host holds for the VM
(``BeginCycleRequest.epoch``). A Fenced refusal (ASR-0044) of any replication RPC fences the
VM (marker, power off, a WARNING log with the code) and takes it off the schedule; fenced VMs
stay off it across settings syncs and restarts, and ``replicate`` refuses them without asking
the cloud. At start, and at every sync for VMs not yet checked (the cloud was unreachable),
``CheckEpoch`` asks the vault whether this host is still the active side. A planned
failover's final cycle (``shutdown_first``: ``BeginCycleRequest.final``) fences the VM itself
once its point is acknowledged: the vault advanced the epoch in the same transaction.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from agent.fencing import fence_vm
from agent.hypervisor import LocalHypervisor
from agent.hypervisor.fence import refusal
from agent.replication.cycle import Cycle, CycleResult, Windows, _Rpc, codec_workers
from agent.replication.state import StateStore, VmReplicationState
from agent.replication.throttle import Throttle
from agent.settings import ReplicationSettings, Settings
from asrclock import Clock
from asrerrors import AsrError, Fenced, NotFound, Unreachable
from asrpb import replication_pb2
from chunkfmt import DEFAULT_COMPRESSION, CustomerKey
from chunkfmt.keys import Keys

if TYPE_CHECKING:
    from agent.metrics import CycleMetrics
    from agent.replica.channel import ReplicaChannels

log = logging.getLogger(__name__)
SYNC_SECONDS = 5.0


def phase_slot(vm_id: str, interval: float, due: float) -> float:
    """The first moment at or after ``due`` in the VM's own slot of its copy interval.

    Each VM's slot is a fixed offset into every interval, from a hash of its id, so the cycles
    of a host's VMs are spread over the interval instead of all starting together (they would
    contend for the host's cores and uplink, and for the vault, at the same moment, every
    interval: bench/load.py). The offset is stable across restarts and settings syncs."""
    digest = hashlib.blake2b(vm_id.encode(), digest_size=8).digest()
    offset = int.from_bytes(digest, "big") / 2.0**64 * interval
    return due + (offset - due) % interval


class SlotTrigger(BaseTrigger):
    """A VM's cycles: the first at ``first`` (a first copy is not delayed), then one per
    interval in the VM's slot (``phase_slot``). A trigger rather than moving the job after its
    first run: a job that modifies itself deadlocks with a scheduler shutting down (the
    shutdown holds the job store's lock while it waits for running jobs)."""

    def __init__(self, vm_id: str, interval: float, first: float) -> None:
        self.vm_id, self.interval, self.first = vm_id, interval, first

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        if previous_fire_time is None:
            return datetime.fromtimestamp(self.first, UTC)
        # half an interval on: from a slot, the next slot; from the first run, the slot after
        # at least half an interval
        at = phase_slot(self.vm_id, self.interval, previous_fire_time.timestamp() + self.interval / 2)
        return datetime.fromtimestamp(at, UTC)

    def __str__(self) -> str:
        return f"slot[{self.vm_id}, every {self.interval:g} s]"


def first_run(start: str, enabled_at: float, now: float) -> float:
    """When the first cycle of a VM is due (epoch seconds)."""
    if not start or start == "now":
        return now
    hh, mm = (int(x) for x in start.split(":"))
    day = datetime.fromtimestamp(enabled_at, UTC)
    at = day.replace(hour=hh, minute=mm, second=0, microsecond=0)
    if at.timestamp() < enabled_at:
        at += timedelta(days=1)
    return max(now, at.timestamp())


class Engine:
    def __init__(self, hv: LocalHypervisor, settings: Settings, channel: Any, target: str, vault_id: str,
                 clock: Clock, state_dir: str, workers: int | None = None, bulk_channel: Any = None,
                 rpc: Any = None, metrics: CycleMetrics | None = None, throttle: Throttle | None = None,
                 replica_channels: ReplicaChannels | None = None) -> None:
        self.hv = hv
        self.metrics = metrics  # the agent's cycle counters (agent.metrics); None: not counted
        self.settings = settings
        # ``rpc(method, request, timeout=...)``: the cloud's Replication service (tests pass a fake)
        self.rpc = rpc if rpc is not None else _Rpc(channel, target, bulk_channel)
        self.vault_id = vault_id
        self.clock = clock
        self.state = StateStore(state_dir)
        self.fingerprint_dir = Path(state_dir) / "fingerprints"
        self.pool = ThreadPoolExecutor(max_workers=workers or codec_workers(os.cpu_count()),
                                       thread_name_prefix="repl-codec")
        self.windows = Windows(self.pool._max_workers)   # bounds the memory of all VMs' cycles
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None
        self._jobs: dict[str, tuple[int, str]] = {}
        self._sync_lock = threading.RLock()  # re-entered when a check fences a VM during a sync
        self._checked: set[str] = set()      # VMs whose epoch the vault confirmed since start
        # the host's upload limit, shared by every VM's cycles (None: not limited)
        self.throttle = throttle
        # site-to-site: the channels to recovery hosts (agent.replica.channel); None: every VM
        # ships to the vault
        self.replica_channels = replica_channels

    # -- one cycle ---------------------------------------------------------------------------------
    def _lock(self, vm_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(vm_id, threading.Lock())

    def keys(self, rs: ReplicationSettings) -> Keys:
        if rs.policy.encrypt:
            return Keys.for_customer_key(CustomerKey.load(self.settings.customer_key_path))
        return Keys.for_vault(rs.vault_id or self.vault_id)

    def app_due(self, rs: ReplicationSettings, st: VmReplicationState) -> bool:
        """An app-consistent point is due: the policy asks for them, and neither the last app
        point nor the last failed attempt is within ``app_consistent_hours``."""
        hours = rs.policy.app_consistent_hours
        return bool(hours) and self.clock.now() - max(st.last_app_at, st.last_app_attempt_at) >= hours * 3600

    def replicate(self, vm_id: str, app_consistent: bool | None = None, shutdown_first: bool = False) -> CycleResult:
        """Run one cycle now (waiting for a running one of the same VM); returns the result.
        ``shutdown_first``: shut the VM down and ship its final changes (planned failover);
        once acknowledged the VM is fenced here."""
        rs = self.settings.get(vm_id)
        if rs is None:
            raise NotFound(f"VM {vm_id} is not enabled for replication on this host")
        with self._lock(vm_id):
            marker = self.hv.fenced(rs.vm_name)
            if marker is not None:
                raise refusal(rs.vm_name, marker, "it does not replicate from this host")
            st = self.state.get(vm_id)
            if app_consistent is None:
                # a VM shut down for a planned failover is consistent as it is: no hook to run
                app_consistent = not shutdown_first and self.app_due(rs, st)
            if shutdown_first:
                self.hv.stop(rs.vm_name)
            attempted_at = self.clock.now()
            rpc = self._data_rpc(rs)

            def new_cycle() -> Cycle:
                return Cycle(rpc, self.hv, self.pool, self.keys(rs), progress=lambda p: self._report(rs, p, st),
                             fingerprint_dir=self.fingerprint_dir / vm_id, epoch=rs.epoch, final=shutdown_first,
                             throttle=self.throttle, windows=self.windows,
                             compression=rs.policy.compression or DEFAULT_COMPRESSION)

            cycle = new_cycle()
            try:
                # An endpoint that stopped answering mid-cycle: the failed call moved the
                # channel to the next (asrchannel.endpoints), and the cycle runs again there
                # at once, once per other endpoint. It does not start over: the vault already
                # holds the chunks sent (any service process reads the same store), and
                # Missing asks only for the others.
                moves = getattr(rpc, "endpoints", 1) - 1
                while True:
                    at = getattr(rpc, "endpoint", None)
                    try:
                        res = cycle.run(vm_id, rs.vm_name, app_consistent, st.last_point_id)
                        break
                    except Unreachable as err:
                        now_at = getattr(rpc, "endpoint", None)
                        if moves <= 0 or now_at == at:
                            raise
                        moves -= 1
                        log.warning("replication cycle moves to the next cloud endpoint", extra={"fields": {
                            "vm": rs.vm_name, "from": at, "to": now_at, "error": f"{err.code}: {err}"}})
                        cycle = new_cycle()
            except Exception as err:
                if self.metrics is not None:
                    self.metrics.failed(rs.vm_name, err.code if isinstance(err, AsrError) else AsrError.code)
                if isinstance(err, Fenced):
                    self.fenced(rs, err)
                if not isinstance(err, AsrError) or isinstance(err, Fenced):
                    raise
                if cycle.quiesce_error is not None:
                    st.last_app_attempt_at = attempted_at
                st.last_error = f"{err.code}: {err}"
                self.state.save(vm_id, st)
                self._report(rs, 0.0, st)
                raise
            st.last_point_id, st.last_point_at, st.last_error = res.point_id, res.created_at, ""
            if self.metrics is not None:
                self.metrics.committed(rs.vm_name, res)
            if res.kind == "app":
                st.last_app_at = res.created_at
                st.warning = st.warning_code = ""   # reported below: clears the quiesce warning
            elif cycle.quiesce_error is not None:
                st.last_app_attempt_at = attempted_at
                st.warning, st.warning_code = res.warning, res.warning_code
            self.state.save(vm_id, st)
            log.info("point committed", extra={"fields": {
                "vm": rs.vm_name, "point": res.point_id, "kind": res.kind, "modes": res.modes,
                "resync_by": res.resync_by,
                "blocks_read": res.blocks_read, "blocks_changed": res.blocks_changed,
                "bytes_sent": res.bytes_sent, "seconds": round(res.seconds, 3),
                "stall_ms": round(res.stall_seconds * 1000, 2),
                **({"warning": res.warning, "code": res.warning_code} if res.warning else {})}})
            # the vault forgets a failed cycle's error when it records the next point; a recovery
            # host's point (site to site) never reaches it, so every such cycle reports instead
            # (but a planned failover's last one: the VM's epoch moves on with it)
            if res.kind == "app" or res.warning or (rs.replica_target is not None and not shutdown_first):
                self._report(rs, 1.0, st)
            if shutdown_first:
                # the vault advanced the epoch with this point: from now on the VM's active side
                # is the recovery site
                fence_vm(self.hv, rs.vm_name, vm_id, "failed over: planned", rs.epoch)
                self._drop(vm_id)
            return res

    def _data_rpc(self, rs: ReplicationSettings) -> Any:
        """Where the VM's cycles ship: its recovery host (site-to-site), else the vault.
        Progress reports and epoch checks always go to the vault."""
        t = rs.replica_target
        if t is None:
            return self.rpc
        if self.replica_channels is None:
            raise NotFound(f"VM {rs.vm_name} replicates to {t.recovery_host}, and this engine has no channels to "
                           "recovery hosts")
        return self.replica_channels.rpc(t.recovery_host, t.address, t.pairing_id)

    def _report(self, rs: ReplicationSettings, progress: float, st: VmReplicationState) -> None:
        """ReportProgress with the VM's epoch, last error and current warning; a Fenced answer
        fences the VM, other failures are only logged (the next report says it again)."""
        req = replication_pb2.ProgressReport(vm_id=rs.vm_id, initial_progress=progress, error=st.last_error,
                                             epoch=rs.epoch, warning=st.warning, warning_code=st.warning_code)
        try:
            self.rpc("ReportProgress", req, timeout=10)
        except Fenced as err:
            self.fenced(rs, err)
        except AsrError as err:
            log.debug("progress report failed: %s", err)

    def fenced(self, rs: ReplicationSettings, err: Fenced) -> None:
        """The vault refused this host's replication of the VM as stale: fence it here and take
        it off the schedule."""
        fence_vm(self.hv, rs.vm_name, rs.vm_id, f"the vault refused replication from this host: {err.message}",
                 rs.epoch)
        self._drop(rs.vm_id)

    def granted(self, vm_id: str) -> None:
        """A command granted this host the VM's current epoch (agent.fencing.grant)."""
        with self._sync_lock:
            self._checked.add(vm_id)

    def _scheduled(self, vm_id: str) -> None:
        try:
            self.replicate(vm_id)
        except AsrError as err:
            log.warning("replication cycle failed", extra={"fields": {
                "vm_id": vm_id, "code": err.code, "error": f"{err.code}: {err}"}})
        except Exception:  # noqa: BLE001 - a scheduled job must not kill the scheduler
            log.exception("replication cycle of %s crashed", vm_id)

    # -- the epoch check ---------------------------------------------------------------------------
    def check_epochs(self) -> None:
        """CheckEpoch for every enabled, unfenced VM not yet confirmed since start; the refused
        are fenced. A VM whose check could not be made (the cloud unreachable) is asked again
        at the next sync."""
        for rs in self.settings.all():
            with self._sync_lock:
                if rs.vm_id in self._checked:
                    continue
            if self.hv.fenced(rs.vm_name) is not None:
                continue
            try:
                reply = self.rpc("CheckEpoch", replication_pb2.EpochCheck(vm_id=rs.vm_id, epoch=rs.epoch), timeout=10)
            except Fenced as err:
                self.fenced(rs, err)
            except Unreachable as err:
                log.debug("epochs not checked, the cloud is unreachable: %s", err)
                return  # asking about the other VMs now would only wait as long again
            except AsrError as err:
                log.debug("epoch of %s not checked: %s", rs.vm_name, err)
                continue
            else:
                if reply.epoch > rs.epoch:
                    fence_vm(self.hv, rs.vm_name, rs.vm_id, f"the vault's epoch {reply.epoch} is newer than this "
                             f"host's {rs.epoch} (state {reply.state or '?'})", rs.epoch, reply.epoch)
                    self._drop(rs.vm_id)
            with self._sync_lock:
                self._checked.add(rs.vm_id)

    # -- schedule ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.hv.recover()
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.start()
        self._scheduler.add_job(self._sync_job, "interval", seconds=SYNC_SECONDS, id="sync",
                                next_run_time=datetime.now(UTC), max_instances=1, coalesce=True)

    def _sync_job(self) -> None:
        try:
            self.check_epochs()
        except Exception:  # noqa: BLE001 - the sync must go on
            log.exception("epoch check failed")
        self.sync()

    def refresh(self) -> None:
        """Settings or fences changed (a command enabled, disabled or fenced a VM): apply them now."""
        if self._scheduler is not None:
            self.sync()

    def sync(self) -> None:
        """Make the jobs match the settings (VMs enabled, disabled, re-configured or fenced)."""
        with self._sync_lock:
            self._sync()

    def _drop(self, vm_id: str) -> None:
        with self._sync_lock:
            if self._scheduler is not None and vm_id in self._jobs:
                self._scheduler.remove_job(f"vm-{vm_id}")
                del self._jobs[vm_id]

    def _sync(self) -> None:
        assert self._scheduler is not None
        wanted = {rs.vm_id: rs for rs in self.settings.all() if self.hv.fenced(rs.vm_name) is None}
        for vm_id in list(self._jobs):
            rs = wanted.get(vm_id)
            if rs is None or self._jobs[vm_id] != (rs.policy.copy_frequency_seconds, rs.policy.start):
                self._scheduler.remove_job(f"vm-{vm_id}")
                del self._jobs[vm_id]
        for vm_id, rs in wanted.items():
            if vm_id in self._jobs:
                continue
            freq = rs.policy.copy_frequency_seconds or 300
            now = self.clock.now()
            delay = first_run(rs.policy.start, rs.enabled_at, now) - now
            at = datetime.now(UTC).timestamp() + delay
            if self.state.get(vm_id).last_point_id:
                at = phase_slot(vm_id, freq, at)   # replicated before (a restart): straight to its slot
            self._scheduler.add_job(
                self._scheduled, SlotTrigger(vm_id, freq, at), args=[vm_id], id=f"vm-{vm_id}",
                max_instances=1, coalesce=True, misfire_grace_time=None)
            self._jobs[vm_id] = (rs.policy.copy_frequency_seconds, rs.policy.start)

    def stop(self) -> None:
        if self.throttle is not None:
            self.throttle.close()   # a cycle waiting for bandwidth ends now instead of at its own pace
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.pool.shutdown(wait=True)
        if self.replica_channels is not None:
            self.replica_channels.close()
