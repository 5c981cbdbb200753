"""The daemons as services: unit files that systemd accepts, and sd_notify READY /
WATCHDOG / STOPPING from a real cloudsvc (NOTIFY_SOCKET is a datagram socket we own)."""

from __future__ import annotations

import shutil
import socket
import subprocess
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


def test_cloudsvc_notifies_ready_watchdog_stopping(procs: Procs, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    cloud = Cloud(procs, tmp_path / "cloud")
    env = cloud.env(NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000")
    proc = procs.start("cloudsvc", [str(BIN / "asr-cloudsvc"), "serve", "--data-dir", str(cloud.data_dir)], env=env)
    got: list[str] = []

    def received(word: str) -> bool:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        return any(word in m for m in got)

    wait_for(lambda: received("READY=1"), 30, what="READY=1")
    wait_for(lambda: received("WATCHDOG=1"), 30, what="WATCHDOG=1")
    proc.popen.terminate()
    wait_for(lambda: received("STOPPING=1"), 30, what="STOPPING=1")
    assert proc.popen.wait(30) == 0
    sock.close()

