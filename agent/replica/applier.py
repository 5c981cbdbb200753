"""The recovery host's applier: one thread that brings each VM's replica disks to its newest
recorded point, after ``CommitPoint`` has answered (docs/design.md, "Site-to-site data path").

``point_made`` marks a VM due; the thread applies due VMs one at a time (``ReplicaVm.
apply_latest``). Coalescing is by construction: a VM marked due again while it is being
applied is applied once more afterwards, to whatever is newest then, so points that arrive
during an apply are skipped, not queued. ``wait_applied`` lets a caller (a test, a failover on
this host) wait until the disks hold a given point or a newer one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.replica.store import ReplicaHost
from asrerrors import NotFound

log = logging.getLogger(__name__)

RETRY_S = 30.0   # a failed apply is tried again after this long


class Applier:
    def __init__(self, host: ReplicaHost, stopping: threading.Event,
                 on_applied: Callable[[str], None] = lambda vm_id: None, retry_s: float = RETRY_S) -> None:
        self.host = host
        self.stopping = stopping
        self.retry_s = retry_s
        self._failed: set[str] = set()   # VMs whose last apply failed (retried every retry_s)
        # called after every apply (the reporter tells the vault which point the disks hold)
        self.on_applied = on_applied
        self._cond = threading.Condition()
        self._due: dict[str, None] = {}   # insertion-ordered set: VMs in the order they became due

    def point_made(self, vm_id: str) -> None:
        """A point of ``vm_id`` became durable and recorded: apply it (on the applier's thread)."""
        with self._cond:
            self._due[vm_id] = None
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:   # the caller set ``stopping``: the loop ends now, not at its next wake-up
            self._cond.notify_all()

    def run(self) -> None:
        # at start every held replica is due: a point recorded before a crash and not applied
        # (``ReplicaHost.recover`` normally caught it already) is applied without waiting for
        # the next commit
        for p in self.host.pairings.all():
            self.point_made(p.vm_id)
        while True:
            with self._cond:
                while not self._due and not self.stopping.is_set():
                    if not self._cond.wait(self.retry_s if self._failed else None):
                        for failed in sorted(self._failed):   # retry_s passed: try the failed ones again
                            self._due[failed] = None
                if self.stopping.is_set():
                    return
                vm_id = next(iter(self._due))
                del self._due[vm_id]
            self.apply_one(vm_id)

    def apply_one(self, vm_id: str) -> str:
        """Bring one VM's disks to its newest point now (on the caller's thread)."""
        try:
            how = self.host.vm(vm_id).apply_latest()
        except NotFound:
            how = "none"   # released meanwhile
        except Exception:  # noqa: BLE001 - the applier must outlive a damaged replica
            log.exception("applying the replica of %s failed", vm_id)
            how = "failed"
        with self._cond:
            if how == "failed":
                self._failed.add(vm_id)
            else:
                self._failed.discard(vm_id)
            self._cond.notify_all()   # wake ``wait_applied``
        if how not in ("current", "none", "held"):
            self.on_applied(vm_id)
        return how

    def wait_applied(self, vm_id: str, point_id: str, timeout: float) -> bool:
        """Wait until the disks of ``vm_id`` hold ``point_id`` or a point recorded after it;
        False when ``timeout`` seconds passed first (or the point is not a recorded point)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._holds(vm_id, point_id):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping.is_set():
                    return False
                self._cond.wait(left)

    def _holds(self, vm_id: str, point_id: str) -> bool:
        r = self.host.vm(vm_id)
        st = r.disks.state()
        if st.applying or not st.point_id:
            return False
        order = [rec.point_id for rec in r.records()]
        return point_id in order and st.point_id in order and order.index(st.point_id) >= order.index(point_id)
