"""systemd's side of the daemon core: the sd_notify(3) protocol.

A daemon under systemd (``Type=notify``) tells the manager it is ready (``READY=1``), still
alive (``WATCHDOG=1``, at least every ``WatchdogSec``), what it is doing (``STATUS=``) and
that it is stopping (``STOPPING=1``). The protocol is one datagram of newline-separated
``KEY=value`` lines, UTF-8, to the ``AF_UNIX`` socket named by ``NOTIFY_SOCKET`` (a leading
``@`` names Linux's abstract namespace). Without that variable (not under systemd, or on
Windows) every call does nothing.

These few lines replace the ``sdnotify`` package (0.3.2, unmaintained since 2017), which
encodes messages as Latin-1 and swallows every error: ``READY=1`` with a status naming a
server outside Latin-1 was silently never sent, and systemd killed the daemon at
``TimeoutStartSec``. Here a failed send is logged (once, not at every watchdog ping) and
the daemon carries on: a manager that stopped listening must not stop the service.

The watchdog interval comes from ``WATCHDOG_USEC`` (set by systemd when ``WatchdogSec`` is
on), for this process only when ``WATCHDOG_PID`` is unset or names it; the daemon pings at
half of it, as sd_watchdog_enabled(3) recommends. *Who* pings, and when, is the daemon
core's business (:mod:`asrops.lifecycle`): only a main loop that made progress does.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between watchdog pings systemd asks of this process (half of ``WatchdogSec``),
    or None when the watchdog is off or meant for another process."""
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", "") or 0)
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class SystemdNotifier:
    """The daemon core's service manager under systemd (see :class:`asrops.lifecycle.ServiceManager`)."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        elif address:
            # e.g. systemd 254's vsock: addresses, for virtual machines: not ours to serve
            log.warning("NOTIFY_SOCKET %r is not a unix socket path; systemd notifications are off", address)
        self.ping_interval = watchdog_interval(environ) if self.address else None
        self._failed = False

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False if not under systemd or the send failed."""
        if self.address is None or not hasattr(socket, "AF_UNIX"):
            return False
        payload = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("systemd notification to %s failed: %s", self.address.replace("\0", "@"), exc)
            self._failed = True
            return False
        self._failed = False
        return True

    # ---- ServiceManager -----------------------------------------------------------------
    def ready(self, status: str) -> None:
        self.send("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def alive(self) -> None:
        self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={_one_line(text)}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")


def _one_line(text: str) -> str:
    # a newline inside a value would start a new assignment
    return " ".join(text.splitlines())


__all__ = ["SystemdNotifier", "watchdog_interval"]
