"""The daemon core: one stop event, one main loop, and the service manager it answers to.

Every daemon (``asr-cloudsvc serve``, ``asr-provider run``, ``asr-agent run``) lives the
same way, whether systemd, a terminal or the Windows service control manager runs it::

    life = life or Lifecycle.for_console()       # systemd or a terminal: SIGTERM/SIGINT stop it
    ...build the daemon and start its threads; each loop that must keep turning registers:
    beat = life.watch("heartbeat", within=90.0)  # ...and calls beat() on every turn
    life.ready("provider vmm01")                 # READY=1 / SERVICE_RUNNING
    life.serve()                                 # the main loop, until a stop is requested
    life.stop()                                  # STOPPING=1 / SERVICE_STOP_PENDING
    ...graceful stop: servers drain, threads join

**Stop.** ``stopping`` is the one event every thread of the daemon watches. It is set by
:meth:`request_stop`, which any thread may call (the Windows service host calls it from the
service manager's thread), or by SIGTERM/SIGINT (SIGBREAK too on Windows). Python runs
signal handlers only in the main thread and lets only the main thread install them, so
:meth:`install_signal_handlers` refuses any other thread, and a service host, whose daemon
runs on a thread of the service manager's, never calls it. A handler only records the
signal and writes a byte to a socket pair the main loop waits on (no Python-level lock is
taken in a handler, so it cannot deadlock against the code it interrupted); the main loop
sets the event. The same socket is the process's signal wake-up fd
(``signal.set_wakeup_fd``): the kernel delivers a process-directed signal to any thread
that does not block it (a gRPC or pin-renewer thread, say), and Python runs the handler
only when the main thread next executes bytecode. A main loop blocked in a lock's timed
wait then slept through SIGTERM until its timeout (``IDLE_TURN_S``, or an hour in a test);
the C-level handler's write to the wake-up fd ends the main loop's ``select`` whichever
thread took the signal.

**Watchdog.** The main loop pings the manager's watchdog only when a turn of it completed
and every watched loop beat within its bound. A stuck main loop, or a stuck or dead worker
loop, therefore stops the pings, and systemd (``WatchdogSec``) kills the daemon and
restarts it (``Restart=on-failure``). The earlier free-running ping thread kept a
deadlocked daemon "alive" for ever.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from asrclock import Clock, SystemClock
from asrops.systemd_notify import SystemdNotifier

log = logging.getLogger(__name__)

IDLE_TURN_S = 5.0  # how often the main loop turns when no watchdog asks for more


class ServiceManager(Protocol):
    """What runs the daemon: systemd (:class:`asrops.systemd_notify.SystemdNotifier`), the
    Windows service control manager (:mod:`asrops.winservice`), or nothing at all."""

    ping_interval: float | None  # seconds between watchdog pings it needs; None: no watchdog

    def ready(self, status: str) -> None: ...

    def alive(self) -> None: ...

    def status(self, text: str) -> None: ...

    def stopping(self) -> None: ...


Beat = Callable[[], None]
Watch = Callable[[str, float], Beat]  # Lifecycle.watch, as the composition roots pass it on


@dataclass
class Watched:
    """A loop that must turn at least every ``within`` seconds."""

    name: str
    within: float
    last: float


class Lifecycle:
    def __init__(self, manager: ServiceManager | None = None, clock: Clock | None = None,
                 before_turn: Callable[[], None] | None = None) -> None:
        """``before_turn`` runs at the start of every turn of the main loop: the fault point
        tests use to hold the loop still (a daemon whose main loop is stuck)."""
        self.stopping = threading.Event()
        self.manager: ServiceManager = manager if manager is not None else SystemdNotifier()
        self.clock = clock or SystemClock()
        self.stop_reason = ""
        self._before_turn = before_turn
        self._watched: dict[str, Watched] = {}
        self._stuck: tuple[str, ...] = ()
        self._signalled = ""
        # A byte written to _wake_w wakes the main loop (select on _wake_r): by
        # request_stop, by a handler, or by the C-level signal handler (set_wakeup_fd).
        # Non-blocking: a full buffer already holds a wake-up the loop has not consumed.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        weakref.finalize(self, _close_all, self._wake_r, self._wake_w)
        self._previous_wakeup_fd: int | None = None

    @classmethod
    def for_console(cls) -> Lifecycle:
        """The daemon core as systemd or a terminal runs it: stopped by signals."""
        life = cls()
        life.install_signal_handlers()
        return life

    # ---- stop --------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be installed from the main thread; "
                               "a service host stops the daemon with request_stop()")

        def handler(signum: int, frame: object) -> None:
            self._signalled = self._signalled or signal.Signals(signum).name
            self._wake_up()

        for name in ("SIGTERM", "SIGINT", "SIGBREAK"):  # SIGBREAK: Ctrl+Break on Windows
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), handler)
        previous = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        if self._previous_wakeup_fd is None:
            self._previous_wakeup_fd = previous

    def restore_wakeup_fd(self) -> None:
        """Give the process's signal wake-up fd back (before this object's sockets close,
        so a later signal cannot write into a reused descriptor): for tests, which make many
        lifecycles in one process; a daemon keeps its one until it exits."""
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None

    def request_stop(self, reason: str) -> None:
        """Ask the daemon to stop gracefully (any thread; not from a signal handler)."""
        if not self.stopping.is_set():
            self.stop_reason = reason
            log.info("stop requested", extra={"fields": {"reason": reason}})
        self.stopping.set()
        self._wake_up()

    def _wake_up(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # the buffer is full: the main loop has wake-ups it has not consumed yet

    # ---- progress ------------------------------------------------------------------------------
    def watch(self, name: str, within: float) -> Beat:
        """Register a loop that must turn at least every ``within`` seconds; it calls the
        returned function on every turn. Until it does, the watchdog is not pinged."""
        watched = Watched(name, within, self.clock.monotonic())
        self._watched[name] = watched

        def beat() -> None:
            watched.last = self.clock.monotonic()

        return beat

    def stuck(self) -> list[str]:
        """Names of the watched loops that did not turn within their bound."""
        now = self.clock.monotonic()
        return [w.name for w in self._watched.values() if now - w.last > w.within]

    # ---- the main loop ---------------------------------------------------------------------------
    def ready(self, status: str = "") -> None:
        self.manager.ready(status)

    def status(self, text: str) -> None:
        self.manager.status(text)

    def serve(self) -> None:
        """The main loop: a turn every ping interval (or :data:`IDLE_TURN_S`) until a stop is
        requested. Returns with ``stopping`` set."""
        interval = self.manager.ping_interval or IDLE_TURN_S
        while True:
            if self._signalled:
                self.request_stop(self._signalled)
            if self.stopping.is_set():
                return
            self.turn()
            ready, _, _ = select.select([self._wake_r], [], [], interval)
            if ready:
                self._drain()

    def _drain(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass  # empty (BlockingIOError): every wake-up so far is consumed

    def turn(self) -> bool:
        """One turn of the main loop; True if it pinged the watchdog (every watched loop
        made progress in time)."""
        if self._before_turn is not None:
            self._before_turn()
        stuck = tuple(self.stuck())
        if stuck != self._stuck:
            if stuck:
                log.error("no progress: watchdog pings withheld, so the service manager restarts the daemon",
                          extra={"fields": {"stuck": list(stuck),
                                            "within_s": {n: self._watched[n].within for n in stuck}}})
                self.manager.status(f"stuck: {', '.join(stuck)}")
            else:
                log.warning("progress again: watchdog pings resumed")
                self.manager.status("running")
            self._stuck = stuck
        if stuck:
            return False
        self.manager.alive()
        return True

    def stop(self) -> None:
        """Tell the manager the daemon is stopping (its graceful stop follows)."""
        self.manager.stopping()


def _close_all(*socks: socket.socket) -> None:
    for sock in socks:
        sock.close()


__all__ = ["IDLE_TURN_S", "Beat", "Lifecycle", "ServiceManager", "Watch"]
