"""Service-manager integration: sd_notify and graceful stop.

sdnotify swallows errors, which is what we want under a manager that may not listen; the
watchdog is pinged from a daemon thread at half the interval systemd asks for.
"""

from __future__ import annotations

import os
import signal
import threading

import sdnotify


class Lifecycle:
    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._notifier = sdnotify.SystemdNotifier()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: object) -> None:
            self.stopping.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def ready(self, status: str = "") -> None:
        self._notifier.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if usec > 0:
            interval = usec / 2_000_000

            def ping() -> None:
                while not self.stopping.wait(interval):
                    self._notifier.notify("WATCHDOG=1")

            threading.Thread(target=ping, name="watchdog", daemon=True).start()

    def status(self, text: str) -> None:
        self._notifier.notify(f"STATUS={text}")

    def stop(self) -> None:
        self._notifier.notify("STOPPING=1")

    def wait(self) -> None:
        while not self.stopping.wait(1.0):
            pass
