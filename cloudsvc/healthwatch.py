"""Watching every protected VM's replication health for changes.

Health is derived (``replication.item_health``): it changes with the clock as the latest
point ages, not only when something is written, so a thread compares it every
``WATCH_SECONDS`` (real time; the health itself is judged by the injectable clock) through
:meth:`Replication.watch_health`: each change is one event in the vault's history and one
log line (to Critical at ERROR, to Warning at WARNING, back to Normal at INFO), and the
health last seen is kept in the metadata DB (``health_seen``), so a restarted or a second
cloud-service process does not report a change twice. With several processes one watches at
a time, under the named lease ``health.watch`` (``cloudsvc.leases``): the others would only
repeat its work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from cloudsvc.replication import Replication

log = logging.getLogger(__name__)

WATCH_SECONDS = 5.0
LEASE = "health.watch"


class HealthWatch:
    def __init__(self, replication: Replication, stopping: threading.Event, interval: float = WATCH_SECONDS,
                 lease: Callable[[str], bool] = lambda name: True) -> None:
        self.replication = replication
        self.lease = lease   # ``Leases.acquire``: whether this process watches now
        self.stopping = stopping
        self.interval = interval
        self._thread: threading.Thread | None = None

    def check(self) -> int:
        """One look: the number of changes recorded."""
        return self.replication.watch_health()

    def start(self) -> None:
        if self._thread is not None:
            return

        def loop() -> None:
            while True:
                try:
                    if self.lease(LEASE):
                        self.check()
                except Exception:  # noqa: BLE001 - keep watching
                    log.exception("health check failed")
                if self.stopping.wait(self.interval):
                    return

        self._thread = threading.Thread(target=loop, name="health-watch", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=10)
