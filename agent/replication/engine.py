"""The agent's replication engine: a cycle per protected VM on the policy's schedule.

The schedule (apscheduler, real time): every VM in ``Settings`` gets an interval job at its
copy frequency. Its first run is the policy's start: ``now``, or the first ``HH:MM`` (UTC)
at or after protection was enabled (if that moment has passed, at once). A sync job picks up
VMs enabled or disabled since. One VM never runs two cycles at once (a lock per VM shared
with ``replicate_now``); a cycle that fails is retried at the next interval and its error is
reported to the cloud, where it shows in the VM's health.

App-consistent points: a cycle is app-consistent when the policy asks for them and the last
acknowledged app-consistent point is at least ``app_consistent_hours`` old (by the injectable
clock).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from agent.hypervisor import LocalHypervisor
from agent.replication.cycle import Cycle, CycleResult, _Rpc
from agent.replication.state import StateStore
from agent.settings import ReplicationSettings, Settings
from asrclock import Clock
from asrerrors import AsrError, NotFound
from asrpb import replication_pb2
from chunkfmt import CustomerKey
from chunkfmt.keys import Keys

log = logging.getLogger(__name__)
SYNC_SECONDS = 5.0


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
                 clock: Clock, state_dir: str, workers: int | None = None, bulk_channel: Any = None) -> None:
        self.hv = hv
        self.settings = settings
        self.rpc = _Rpc(channel, target, bulk_channel)
        self.vault_id = vault_id
        self.clock = clock
        self.state = StateStore(state_dir)
        self.fingerprint_dir = Path(state_dir) / "fingerprints"
        self.pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 2),
                                       thread_name_prefix="repl-codec")
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None
        self._jobs: dict[str, tuple[int, str]] = {}
        self._sync_lock = threading.Lock()

    # -- one cycle ---------------------------------------------------------------------------------
    def _lock(self, vm_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(vm_id, threading.Lock())

    def keys(self, rs: ReplicationSettings) -> Keys:
        if rs.policy.encrypt:
            return Keys.for_customer_key(CustomerKey.load(self.settings.customer_key_path))
        return Keys.for_vault(rs.vault_id or self.vault_id)

    def replicate(self, vm_id: str, app_consistent: bool | None = None, shutdown_first: bool = False) -> CycleResult:
        """Run one cycle now (waiting for a running one of the same VM); returns the result."""
        rs = self.settings.get(vm_id)
        if rs is None:
            raise NotFound(f"VM {vm_id} is not enabled for replication on this host")
        with self._lock(vm_id):
            st = self.state.get(vm_id)
            if app_consistent is None:
                hours = rs.policy.app_consistent_hours
                app_consistent = bool(hours) and self.clock.now() - st.last_app_at >= hours * 3600
            if shutdown_first:
                self.hv.stop(rs.vm_name)
            cycle = Cycle(self.rpc, self.hv, self.pool, self.keys(rs),
                          progress=lambda p: self._report(vm_id, p, ""),
                          fingerprint_dir=self.fingerprint_dir / vm_id)
            try:
                res = cycle.run(vm_id, rs.vm_name, app_consistent, st.last_point_id)
            except AsrError as err:
                st.last_error = f"{err.code}: {err}"
                self.state.save(vm_id, st)
                self._report(vm_id, 0.0, st.last_error)
                raise
            st.last_point_id, st.last_point_at, st.last_error = res.point_id, res.created_at, ""
            if res.kind == "app":
                st.last_app_at = res.created_at
            self.state.save(vm_id, st)
            log.info("point committed", extra={"fields": {
                "vm": rs.vm_name, "point": res.point_id, "kind": res.kind, "modes": res.modes,
                "resync_by": res.resync_by,
                "blocks_read": res.blocks_read, "blocks_changed": res.blocks_changed,
                "bytes_sent": res.bytes_sent, "seconds": round(res.seconds, 3),
                "stall_ms": round(res.stall_seconds * 1000, 2)}})
            return res

    def _report(self, vm_id: str, progress: float, error: str) -> None:
        try:
            self.rpc("ReportProgress", replication_pb2.ProgressReport(vm_id=vm_id, initial_progress=progress,
                                                                      error=error), timeout=10)
        except AsrError as err:
            log.debug("progress report failed: %s", err)

    def _scheduled(self, vm_id: str) -> None:
        try:
            self.replicate(vm_id)
        except AsrError as err:
            log.warning("replication cycle failed", extra={"fields": {"vm_id": vm_id, "error": f"{err.code}: {err}"}})
        except Exception:  # noqa: BLE001 - a scheduled job must not kill the scheduler
            log.exception("replication cycle of %s crashed", vm_id)

    # -- schedule ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.hv.recover()
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.start()
        self._scheduler.add_job(self.sync, "interval", seconds=SYNC_SECONDS, id="sync",
                                next_run_time=datetime.now(UTC), max_instances=1, coalesce=True)

    def refresh(self) -> None:
        """Settings changed (a command enabled or disabled a VM): apply them now."""
        if self._scheduler is not None:
            self.sync()

    def sync(self) -> None:
        """Make the jobs match the settings (VMs enabled, disabled or re-configured)."""
        with self._sync_lock:
            self._sync()

    def _sync(self) -> None:
        assert self._scheduler is not None
        wanted = {rs.vm_id: rs for rs in self.settings.all()}
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
            self._scheduler.add_job(
                self._scheduled, "interval", args=[vm_id], seconds=freq, id=f"vm-{vm_id}",
                next_run_time=datetime.now(UTC) + timedelta(seconds=delay), max_instances=1, coalesce=True,
                misfire_grace_time=None)
            self._jobs[vm_id] = (rs.policy.copy_frequency_seconds, rs.policy.start)

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.pool.shutdown(wait=True)
