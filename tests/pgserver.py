"""A throw-away PostgreSQL server for the tests (``ASR_TEST_DATABASE=postgresql``).

Debian's PostgreSQL 15 binaries, ``initdb`` and ``pg_ctl`` in a temporary directory: a free loopback
port, the unix socket in that directory, trust authentication. Started once per pytest session
(``tests/conftest.py``), one fresh database per cloud service (``CREATE DATABASE``), stopped at the
session's end (``-m immediate``, so no server outlives the run). initdb refuses to run as root:
as root the server runs as the ``postgres`` user Debian's package creates.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.harness import free_port, wait_for

BIN = Path(os.environ.get("ASR_PG_BIN", "/usr/lib/postgresql/15/bin"))
ENV = "ASR_TEST_DATABASE"


def wanted() -> bool:
    return os.environ.get(ENV, "sqlite") == "postgresql"


def require() -> None:
    """Skip a test of PostgreSQL itself where Debian's server is not installed; in CI (CI=1) or in
    a PostgreSQL pass that is a failure instead."""
    if (BIN / "initdb").exists():
        return
    import pytest

    if os.environ.get("CI") or wanted():
        pytest.fail(f"PostgreSQL is not installed ({BIN / 'initdb'} is missing): run deploy/setup.sh as root")
    pytest.skip("PostgreSQL not installed (Debian package postgresql)")


class PgServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="asr-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._names = itertools.count(1)

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*self._as, *argv], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {res.stdout}{res.stderr}")
        return res

    def init(self) -> PgServer:
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync",
                  "-E", "UTF8", "--locale", "C")
        return self.start()

    def start(self) -> PgServer:
        # each cloud service holds a connection per thread that used the store (gRPC workers too)
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=400 "
                "-c synchronous_commit=on")
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: like a crash of it; ``fast``: a clean shutdown)."""
        subprocess.run([*self._as, str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                       capture_output=True, timeout=120)

    def running(self) -> bool:
        res = subprocess.run([str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True, timeout=30)
        return res.returncode == 0

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"asr_{os.getpid()}_{next(self._names)}"
        wait_for(self.running, 30, what="PostgreSQL accepting connections")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


_server: PgServer | None = None


def server() -> PgServer:
    """The session's server, started on first use."""
    global _server
    if _server is None:
        _server = PgServer().init()
    return _server


def shutdown() -> None:
    global _server
    if _server is not None:
        _server.destroy()
        _server = None
