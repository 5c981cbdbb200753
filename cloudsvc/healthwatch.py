"""One log line per change of a protected VM's replication health.

Health is derived (``replication.item_health``): it changes with the clock as the latest
point ages, not only when something is written, so a watcher compares it every
``WATCH_SECONDS`` (real time; the health itself is judged by the injectable clock). The
first look after start logs every VM that is not Normal, so that a log read after a restart
says what is wrong; after that, one line per change: to Critical at ERROR, to Warning at
WARNING, back to Normal at INFO, with the first reason. A VM no longer protected is
forgotten without a line (its unprotect job's end is logged).

What it remembers is in memory: each cloud-service process logs what it sees change.
"""

from __future__ import annotations

import logging
import threading

from cloudsvc.replication import Replication, VmFigures
from cloudsvc.vaults import Vaults

log = logging.getLogger(__name__)

WATCH_SECONDS = 5.0
_LEVEL = {"Normal": logging.INFO, "Warning": logging.WARNING, "Critical": logging.ERROR}


class HealthWatch:
    def __init__(self, replication: Replication, vaults: Vaults, stopping: threading.Event,
                 interval: float = WATCH_SECONDS) -> None:
        self.replication = replication
        self.vaults = vaults
        self.stopping = stopping
        self.interval = interval
        self._seen: dict[tuple[str, str], str] | None = None   # (vault id, vm id) -> health; None: not looked yet
        self._names: dict[str, str] = {}
        self._thread: threading.Thread | None = None

    def _vault_name(self, vault_id: str) -> str:
        if vault_id not in self._names:
            self._names = {v.id: v.name for v in self.vaults.list_vaults()}
        return self._names.get(vault_id, vault_id)

    def check(self) -> list[tuple[VmFigures, str]]:
        """Compare every item's health with the last look; log and return (figures, previous
        health or "" for the first look) of each change."""
        now = {(f.item.vault_id, f.item.vm_id): f for f in self.replication.figures()}
        first = self._seen is None
        seen = self._seen or {}
        changes = []
        for key, f in now.items():
            before = seen.get(key, "" if first else "Normal")
            if f.health.state != before and not (first and f.health.state == "Normal"):
                changes.append((f, before))
        self._seen = {key: f.health.state for key, f in now.items()}
        for f, before in changes:
            item, state = f.item, f.health.state
            reason = f.health.errors[0] if f.health.errors else ""
            text = f"{item.name}: replication health {state}" + (f" (was {before})" if before else "")
            log.log(_LEVEL.get(state, logging.WARNING), text + (f": {reason}" if reason else ""), extra={"fields": {
                "vault": self._vault_name(item.vault_id), "vm": item.name, "vm_id": item.vm_id, "health": state,
                "was": before, "protection_state": item.state.value}})
        return changes

    def start(self) -> None:
        if self._thread is not None:
            return

        def loop() -> None:
            while True:
                try:
                    self.check()
                except Exception:  # noqa: BLE001 - keep watching
                    log.exception("health check failed")
                if self.stopping.wait(self.interval):
                    return

        self._thread = threading.Thread(target=loop, name="health-watch", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


__all__ = ["WATCH_SECONDS", "HealthWatch"]
