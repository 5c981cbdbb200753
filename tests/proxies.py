"""Real HTTP CONNECT proxies for tests: tinyproxy and squid, started on free loopback ports."""

from __future__ import annotations

import queue
import re
import shutil
import socket
import tempfile
import threading
import time
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
        # tinyproxy fsyncs its log file after every line, on the thread that serves the
        # connection: under the suite's own fsyncs (two workers) a CONNECT waited 3-7 s for its
        # "Connect" line to reach the disk (a CI run). The log lives in tmpfs while the proxy
        # runs and is copied to the test's directory when the test's processes stop.
        shm = Path("/dev/shm")
        self._log_dir = Path(tempfile.mkdtemp(prefix="asr-tinyproxy-", dir=shm if shm.is_dir() else root))
        self.log = self._log_dir / "tinyproxy.log"
        self.conf = root / "tinyproxy.conf"
        procs.after_stop.append(lambda: self._keep_log(root / "tinyproxy.log"))
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

    def _keep_log(self, dest: Path) -> None:
        if self.log.exists():
            shutil.copyfile(self.log, dest)
        shutil.rmtree(self._log_dir, ignore_errors=True)
        self.log = dest

    def connects(self) -> list[str]:
        """CONNECT targets seen in the proxy's own log."""
        if not self.log.exists():
            return []
        text = self.log.read_text(errors="replace")
        return re.findall(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP", text)


class CountingProxy:
    """A minimal HTTP CONNECT proxy (threads, no authentication) that records, with the time
    of arrival, every byte clients send through tunnels to ``count_port``: the judge of how
    fast a site really uploaded (tests/agent/test_throttle_site.py). Loopback only; stopped
    by :meth:`stop` (the test's ``finally``)."""

    def __init__(self, count_port: int) -> None:
        self._time = time.monotonic
        self.count_port = count_port
        self._lock = threading.Lock()
        self.arrivals: list[tuple[float, int]] = []   # (monotonic time, bytes) sent upstream
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._stopped = False
        self._flowing = threading.Event()   # cleared: tunnels stay open and pass nothing (hold)
        self._flowing.set()
        self._thread = threading.Thread(target=self._accept, name="counting-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                # every socket is the proxy's to close at stop, even one whose tunnel never opened:
                # a socket left to the garbage collector is an unraisable warning in some later test
                self._sockets.append(conn)
                stopped = self._stopped
            if stopped:
                conn.close()
                return
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, conn: socket.socket) -> None:
        try:
            self._open(conn)
        except OSError:      # the client went away, or stop closed the socket under us
            conn.close()

    def _open(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            part = conn.recv(4096)
            if not part:
                conn.close()
                return
            head += part
        request, _, rest = head.partition(b"\r\n\r\n")
        method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ", 2)
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or host not in ("127.0.0.1", "localhost"):
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            conn.close()
            return
        upstream = self._upstream(conn, host, int(port))
        if upstream is None:
            return
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        counted = int(port) == self.count_port
        if rest:
            upstream.sendall(rest)
        threading.Thread(target=self._pump, args=(upstream, conn, False), daemon=True).start()
        self._pump(conn, upstream, counted)

    def _upstream(self, conn: socket.socket, host: str, port: int) -> socket.socket | None:
        """A connection to the target, the proxy's to close at stop (None: stopped meanwhile)."""
        upstream = socket.create_connection((host, port))
        with self._lock:
            self._sockets.append(upstream)
            if self._stopped:
                upstream.close()
                conn.close()
                return None
        return upstream

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if counted:
                    with self._lock:
                        self.arrivals.append((self._time(), len(data)))
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def bytes_between(self, t0: float, t1: float) -> int:
        """Bytes sent upstream to ``count_port`` that arrived in [t0, t1) (monotonic time)."""
        with self._lock:
            return sum(n for t, n in self.arrivals if t0 <= t < t1)

    def now(self) -> float:
        return self._time()

    def hold(self) -> None:
        """Keep every connection open and pass nothing more: a peer that hangs."""
        self._flowing.clear()

    def stop(self) -> None:
        self._server.close()
        self._flowing.set()
        with self._lock:
            self._stopped = True
            for s in self._sockets:
                try:
                    s.close()
                except OSError:
                    pass


class Forwarder(CountingProxy):
    """A plain TCP forwarder from a free loopback port to ``127.0.0.1:target_port``: a "front"
    address of the cloud service that a test can take away (:meth:`stop` closes the port and
    every forwarded connection), as a load balancer or a second service going down would.
    Counts the bytes forwarded to the target like :class:`CountingProxy`."""

    def __init__(self, target_port: int, one_way_delay: float = 0.0) -> None:
        """``one_way_delay``: every byte reaches the other side that many seconds after it
        arrived, in both directions (a long link: 0.3 s is a round trip of 0.6 s). Loopback
        has no netem here (FIELD-NOTES: the kernel lacks sch_netem), so the forwarder delays."""
        self.one_way_delay = one_way_delay
        super().__init__(target_port)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        if not self.one_way_delay:
            super()._pump(src, dst, counted)
            return
        # the reader keeps reading while the sender holds each piece until its time: the
        # delay is latency, not a lower bandwidth
        pieces: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
        threading.Thread(target=self._send_late, args=(pieces, dst), daemon=True).start()
        try:
            while data := src.recv(1 << 16):
                if counted:
                    with self._lock:
                        self.arrivals.append((self._time(), len(data)))
                pieces.put((self._time() + self.one_way_delay, data))
        except OSError:
            pass
        pieces.put((self._time() + self.one_way_delay, b""))

    def _send_late(self, pieces: queue.SimpleQueue[tuple[float, bytes]], dst: socket.socket) -> None:
        try:
            while True:
                due, data = pieces.get()
                time.sleep(max(0.0, due - self._time()))   # the simulated link's latency
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _open(self, conn: socket.socket) -> None:
        upstream = self._upstream(conn, "127.0.0.1", self.count_port)
        if upstream is None:
            return
        threading.Thread(target=self._pump, args=(upstream, conn, False), daemon=True).start()
        self._pump(conn, upstream, True)
