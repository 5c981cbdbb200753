"""The daemons as services: unit files that systemd accepts, and sd_notify READY /
WATCHDOG / STOPPING from a real cloudsvc (NOTIFY_SOCKET is a datagram socket we own)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import BIN, REPO, Cloud, Procs, wait_for

UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_files_verify(unit: Path, tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    text = unit.read_text().replace("/opt/site-recovery/.venv/bin", str(BIN))
    text = text.replace("User=asr\n", "User=root\n").replace("Group=asr\n", "Group=root\n")
    copy = tmp_path / unit.name
    copy.write_text(text)
    assert "Type=notify" in text and "WatchdogSec=" in text
    res = subprocess.run([exe, "verify", str(copy)], capture_output=True, text=True)
    # verify only warns (exit 0) about bad values and unknown keys, so stderr must be empty
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


class NotifyListener:
    """NOTIFY_SOCKET as systemd holds it: a datagram socket that collects what a daemon says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.got: list[str] = []

    def received(self, word: str) -> bool:
        self.sock.settimeout(0.2)
        try:
            self.got.append(self.sock.recv(4096).decode())
        except TimeoutError:
            pass
        return any(word in m for m in self.got)

    def wait(self, word: str) -> None:
        self.got.clear()
        wait_for(lambda: self.received(word), 30, what=word)

    def drain(self) -> list[str]:
        """Everything already queued (sent before now)."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return out

    def during(self, seconds: float) -> list[str]:
        """Everything that arrives in the next ``seconds``."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                out.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return out

    def close(self) -> None:
        self.sock.close()


def test_cloudsvc_notifies_ready_watchdog_stopping(procs: Procs, tmp_path: Path) -> None:
    notify = NotifyListener(tmp_path / "notify.sock")
    cloud = Cloud(procs, tmp_path / "cloud")
    env = cloud.env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="400000")
    proc = procs.start("cloudsvc", [str(BIN / "asr-cloudsvc"), "serve", "--data-dir", str(cloud.data_dir)], env=env)
    notify.wait("READY=1")
    notify.wait("WATCHDOG=1")
    proc.popen.terminate()
    notify.wait("STOPPING=1")
    assert proc.popen.wait(30) == 0
    notify.close()


def test_a_stuck_main_loop_stops_the_watchdog_pings(procs: Procs, tmp_path: Path) -> None:
    """The main loop held at its fault point: no WATCHDOG=1 for a whole WatchdogSec (systemd
    would kill the daemon), although its gRPC server still answers; released, pings resume.
    (The former ping thread pinged whatever the main loop did.)"""
    watchdog_sec = 1.0
    notify = NotifyListener(tmp_path / "notify.sock")
    cloud = Cloud(procs, tmp_path / "cloud")
    hold = tmp_path / "hold"
    hold.mkdir()
    env = cloud.env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(int(watchdog_sec * 1_000_000)))
    proc = procs.start("cloudsvc", [sys.executable, str(REPO / "tests" / "foundation" / "pausable_daemon.py"),
                                    str(hold), "cloudsvc", str(cloud.data_dir)], env=env)
    cloud.proc = proc
    notify.wait("READY=1")
    notify.wait("WATCHDOG=1")
    (hold / "arm").touch()
    wait_for((hold / "fired").exists, 30, what="the main loop held")
    notify.drain()  # pings sent before the loop stopped at its fault point
    assert not [m for m in notify.during(watchdog_sec) if "WATCHDOG=1" in m]
    assert cloud.healthy()  # the process is alive and serving: only the main loop is stuck
    (hold / "release").touch()
    notify.wait("WATCHDOG=1")
    proc.popen.terminate()
    notify.wait("STOPPING=1")
    assert proc.popen.wait(30) == 0
    notify.close()


def test_metrics_endpoint_counts_rpcs(procs: Procs, tmp_path: Path) -> None:
    import urllib.request

    from tests.harness import free_port

    cloud = Cloud(procs, tmp_path / "cloud")
    port = free_port()
    cfg = cloud.data_dir / "cloudsvc.toml"
    cfg.write_text(cfg.read_text().replace('metrics_listen = ""', f'metrics_listen = "127.0.0.1:{port}"'))
    cloud.start()
    cloud.asr("vault", "list")
    cloud.asr("vault", "show", "nope", check=False)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    text = wait_for(lambda: (lambda t: t if "ListVaults" in t else "")(scrape()), 30, what="metrics")
    assert 'asr_rpc_total{code="OK",method="/asr.v1.Operator/ListVaults"} 1.0' in text
    assert 'code="ASR-0040",method="/asr.v1.Operator/GetVault"' in text
