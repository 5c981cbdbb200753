"""Real HTTP CONNECT proxies for tests: tinyproxy and squid, started on free loopback ports."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

from tests.harness import Proc, Procs, free_port, wait_for


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class TinyProxy:
    def __init__(self, procs: Procs, root: Path, allow_ports: list[int], user: str = "asr",
                 password: str = "pr0xy-secret") -> None:
        exe = shutil.which("tinyproxy")
        assert exe, "tinyproxy is not installed (apt-get install tinyproxy; .ci/run does this)"
        self.exe = exe
        self.procs = procs
        self.port = free_port()
        self.log = root / "tinyproxy.log"
        self.conf = root / "tinyproxy.conf"
        self.user, self.password = user, password
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 600", f'LogFile "{self.log}"',
                 "LogLevel Connect", "MaxClients 200", "Allow 127.0.0.1", f"BasicAuth {user} {password}"]
        lines += [f"ConnectPort {p}" for p in allow_ports]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}"

    def start(self) -> TinyProxy:
        self.proc = self.procs.start("tinyproxy", [self.exe, "-d", "-c", str(self.conf)])
        wait_for(lambda: _listening(self.port), 20, what="tinyproxy listening")
        return self

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.stop()
        wait_for(lambda: not _listening(self.port), 20, what="tinyproxy stopped")

    def connects(self) -> list[str]:
        """CONNECT targets seen in the proxy's own log."""
        if not self.log.exists():
            return []
        text = self.log.read_text(errors="replace")
        return re.findall(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP", text)
