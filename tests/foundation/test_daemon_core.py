"""The daemon core (``asrops.lifecycle``) and its systemd side (``asrops.systemd_notify``), in
process: notifications on a real datagram socket, the watchdog withheld while a watched loop
makes no progress (an injected clock), stops from another thread and from a signal."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from asrclock import FakeClock
from asrops.lifecycle import Lifecycle
from asrops.systemd_notify import SystemdNotifier, watchdog_interval
from tests.harness import wait_for


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def test_ready_with_a_status_outside_latin1_reaches_systemd(notify_socket: tuple[socket.socket, str]) -> None:
    # sdnotify 0.3.2 encoded Latin-1 and swallowed the error: READY=1 never arrived and
    # systemd killed the daemon at TimeoutStartSec
    sock, path = notify_socket
    SystemdNotifier({"NOTIFY_SOCKET": path}).ready("provider 東京-vmm01\nsecond line")
    assert sock.recv(4096).decode("utf-8") == "READY=1\nSTATUS=provider 東京-vmm01 second line"


def test_abstract_namespace_socket() -> None:
    name = f"asr-test-notify-{os.getpid()}-{threading.get_ident()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).send("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_a_failed_send_is_logged_once_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING, logger="asrops.systemd_notify"):
        assert not notifier.send("WATCHDOG=1")
        assert not notifier.send("WATCHDOG=1")
    assert len([r for r in caplog.records if "notification" in r.getMessage()]) == 1


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = SystemdNotifier({})
    assert notifier.address is None and notifier.ping_interval is None
    assert not notifier.send("READY=1")


def test_watchdog_interval_is_half_of_watchdog_sec_and_only_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


class RecordingManager:
    """A service manager that records what the daemon core told it."""

    def __init__(self, ping_interval: float | None = None) -> None:
        self.ping_interval = ping_interval
        self.calls: list[str] = []

    def ready(self, status: str) -> None:
        self.calls.append(f"ready {status}")

    def alive(self) -> None:
        self.calls.append("alive")

    def status(self, text: str) -> None:
        self.calls.append(f"status {text}")

    def stopping(self) -> None:
        self.calls.append("stopping")


def test_a_watched_loop_without_progress_withholds_the_watchdog() -> None:
    clock = FakeClock()
    manager = RecordingManager(ping_interval=15.0)
    life = Lifecycle(manager, clock)
    beat = life.watch("job-runner", within=120.0)
    assert life.turn() and manager.calls == ["alive"]
    clock.advance(119.0)
    assert life.turn()
    clock.advance(2.0)  # 121 s since the last beat
    assert life.stuck() == ["job-runner"]
    assert not life.turn() and not life.turn()
    assert manager.calls == ["alive", "alive", "status stuck: job-runner"]
    beat()
    assert life.turn()
    assert manager.calls[-2:] == ["status running", "alive"]


def test_request_stop_from_another_thread_ends_the_main_loop() -> None:
    manager = RecordingManager(ping_interval=3600.0)  # only a wake-up can end the wait in time
    life = Lifecycle(manager)
    turned = threading.Event()
    life._before_turn = turned.set

    def stop_after_a_turn() -> None:
        turned.wait(30)
        life.request_stop("service control manager")

    stopper = threading.Thread(target=stop_after_a_turn)
    stopper.start()
    life.serve()
    stopper.join()
    assert life.stopping.is_set() and life.stop_reason == "service control manager"
    life.stop()
    assert manager.calls == ["alive", "stopping"]


def test_signal_handlers_only_from_the_main_thread() -> None:
    # the former Windows service installed them from the service's thread: ValueError
    errors: list[BaseException] = []

    def install() -> None:
        try:
            Lifecycle(RecordingManager()).install_signal_handlers()
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    t = threading.Thread(target=install)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError) and "main thread" in str(errors[0])


@pytest.mark.parametrize("target", ["process", "another thread"])
def test_sigterm_stops_the_main_loop(target: str) -> None:
    """SIGTERM stops a main loop that waits for an hour between turns, whichever thread the
    kernel hands the signal to. Regression: the loop waited on a lock, and a signal taken by
    another thread (the kernel picks any thread that does not block it; the CI's run got
    the pin renewer's) ran the Python handler only when the wait timed out, so a daemon
    could take up to IDLE_TURN_S to see SIGTERM and this test hung. "another thread" sends
    the signal to the killing thread itself, the case that hung every time."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    life = Lifecycle(RecordingManager(ping_interval=3600.0))
    try:
        life.install_signal_handlers()
        turned = threading.Event()
        life._before_turn = turned.set
        gave_up = threading.Timer(30.0, life.request_stop, ("the signal was not seen in 30 s",))

        def kill_after_a_turn() -> None:
            turned.wait(30)
            if target == "process":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

        killer = threading.Thread(target=kill_after_a_turn)
        killer.start()
        gave_up.start()
        life.serve()
        gave_up.cancel()
        killer.join()
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
        life.restore_wakeup_fd()
    assert life.stopping.is_set() and life.stop_reason == "SIGTERM"


def test_main_loop_turns_ping_at_the_manager_interval() -> None:
    manager = RecordingManager(ping_interval=0.01)
    life = Lifecycle(manager)
    t = threading.Thread(target=life.serve)
    t.start()
    wait_for(lambda: manager.calls.count("alive") >= 3, 30, what="three pings")
    life.request_stop("test")
    t.join(30)
    assert not t.is_alive()
