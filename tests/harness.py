"""Test harness: the real daemons as subprocesses on free loopback ports in temp dirs.

Every process started here is registered with a :class:`Procs` that stops it (SIGTERM, then
SIGKILL after a deadline) when the test ends, so no process is left behind. Waiting is
always polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}; last={last!r}")


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("ASR_VAULT", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["ASR_TEST_MODE"] = "1"   # the daemons honour test hooks (fake clock, faults) only with it
    # a job or background task of a cloud service that died (or restarted) is taken over after
    # this lease: shorter than the 10 s default so tests of restarts and takeovers stay quick
    env.setdefault("ASR_LEASE_SECONDS", "4")
    env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return int(self.popen.returncode)

    def kill9(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Procs:
    root: Path
    procs: list[Proc] = field(default_factory=list)
    # run after every process stopped (e.g. a proxy's log brought back from tmpfs)
    after_stop: list[Callable[[], None]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        log = self.root / f"{name}.{len(self.procs)}.log"
        f = open(log, "wb")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env or base_env(),
                             cwd=cwd or self.root, start_new_session=True)
        f.close()
        proc = Proc(name, p, log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()
            # a daemon's own children (e.g. squid's pinger) go with its session
            try:
                os.killpg(p.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for fn in self.after_stop:
            fn()


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120.0,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env or base_env(), capture_output=True, text=True, timeout=timeout,
                          input=input.decode() if input else None)


class Cloud:
    """An initialised and serving asr-cloudsvc."""

    def __init__(self, procs: Procs, data_dir: Path, clock_file: Path | None = None, host: str = "127.0.0.1",
                 database_url: str = "") -> None:
        """``host``: the loopback address both ports listen on (and the key files name); a
        test whose daemons run in network namespaces passes the root side of a veth link.
        ``database_url``: a PostgreSQL database for the metadata (default: per ASR_TEST_DATABASE)."""
        self.procs = procs
        self.data_dir = data_dir
        self.host = host
        self.port = free_port()
        self.reg_port = free_port()
        self.endpoint = f"{host}:{self.port}"
        self.clock_file = clock_file
        # ASR_TEST_DATABASE=postgresql: the metadata in a fresh database of the session's PostgreSQL
        from tests import pgserver

        self.database_url = database_url or (pgserver.server().new_database() if pgserver.wanted() else "")
        extra = ["--database-url", self.database_url] if self.database_url else []
        res = run([str(BIN / "asr-cloudsvc"), "init", "--data-dir", str(data_dir), "--listen",
                   self.endpoint, "--registration-listen", f"{host}:{self.reg_port}", *extra])
        assert res.returncode == 0, res.stderr
        self.credentials = data_dir / "operator.json"
        self.proc: Proc | None = None
        self.name = "cloudsvc"

    def env(self, **extra: str) -> dict[str, str]:
        e = base_env(ASR_CREDENTIALS=str(self.credentials), ASR_ENDPOINT=self.endpoint, **extra)
        if self.clock_file:
            e["ASR_FAKE_CLOCK_FILE"] = str(self.clock_file)
        return e

    def start(self) -> Cloud:
        self.proc = self.procs.start(self.name, [str(BIN / "asr-cloudsvc"), "serve", "--data-dir",
                                                 str(self.data_dir)], env=self.env())
        wait_for(self.healthy, 30, what="cloudsvc health")
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise AssertionError(f"cloudsvc exited: {self.proc.text()}")
        ca = (self.data_dir / "pki" / "ca.pem").read_bytes()
        ch = grpc.secure_channel(f"{self.host}:{self.reg_port}", grpc.ssl_channel_credentials(ca))
        try:
            res = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(res.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False
        finally:
            ch.close()

    def stop(self) -> int:
        assert self.proc is not None
        return self.proc.stop()

    def restart(self, name: str = "cloudsvc", **env: str) -> Proc:
        """Stop the service if it runs and start it again with extra environment (e.g. the
        ``ASR_FAULTS`` of :func:`pause_fault`)."""
        if self.proc is not None and self.proc.alive():
            self.stop()
        self.proc = self.procs.start(name, [str(BIN / "asr-cloudsvc"), "serve", "--data-dir", str(self.data_dir)],
                                     env=self.env(**env))
        wait_for(self.healthy, 30, what="cloudsvc health")
        return self.proc

    def clone(self, data_dir: Path, name: str = "cloudsvc-b", share_indexes: bool = True) -> Cloud:
        """A second cloud service over the same vaults (issue 15): its data directory is a copy
        of this one's configuration and PKI with its own listen addresses, and shares this
        one's metadata database, storage accounts and store indexes (symlinks: SQLite follows
        them, so both processes use one database file and its WAL). ``share_indexes=False``:
        its own ``replication/`` directory, as on another machine (a blob account's index is
        then shared only through PostgreSQL). Not started."""
        import tomllib

        data_dir.mkdir(parents=True)
        shutil.copytree(self.data_dir / "pki", data_dir / "pki", symlinks=True)
        shutil.copy2(self.credentials, data_dir / "operator.json")
        dirs = ("storage", "replication") if share_indexes else ("storage",)
        for shared in dirs:   # made now: a symlink to nothing is useless
            (self.data_dir / shared).mkdir(exist_ok=True)
        # the metadata: one SQLite file, or the PostgreSQL database the copied database_url names
        for shared in dirs + (() if self.database_url else ("metadata.db",)):
            (data_dir / shared).symlink_to(self.data_dir / shared)
        doc = tomllib.loads((self.data_dir / "cloudsvc.toml").read_text())
        other = Cloud.__new__(Cloud)
        other.procs, other.data_dir, other.host, other.clock_file = self.procs, data_dir, self.host, self.clock_file
        other.database_url = self.database_url
        other.port, other.reg_port = free_port(), free_port()
        other.endpoint = f"{self.host}:{other.port}"
        other.credentials, other.proc, other.name = data_dir / "operator.json", None, name
        doc["listen"], doc["registration_listen"] = other.endpoint, f"{self.host}:{other.reg_port}"
        for key in ("metrics_listen", "portal_listen"):
            if doc.get(key):
                doc[key] = f"{self.host}:{free_port()}"
        write_toml(data_dir / "cloudsvc.toml", doc)
        (data_dir / "cloudsvc.toml").chmod((self.data_dir / "cloudsvc.toml").stat().st_mode & 0o777)
        return other

    def asr(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        res = run([str(BIN / "asr"), *args], env=self.env(**env))
        if check:
            assert res.returncode == 0, f"asr {' '.join(args)} failed: {res.stderr}"
        return res

    def asr_json(self, *args: str) -> Any:
        """The command's JSON output, checked against the command's JSON Schema (asrcli/schemas)."""
        from tests.cli_schema import check, command_of

        return check(command_of(args), json.loads(self.asr(*args, "--json").stdout))

    def db_rows(self, table: str) -> list[tuple[Any, ...]]:
        return sorted(tuple(r) for r in self.sql(f"SELECT * FROM {table}"))

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of a read-only query on the service's metadata store, whichever the engine
        (``?`` placeholders; rows by position and by name)."""
        from metastore.database import Database, open_database

        db: Database = open_database(self.database_url or str(self.data_dir / "metadata.db"), [], migrate=False)
        try:
            return db.query(query, args)
        finally:
            db.close()


@dataclass
class PauseFault:
    """An ``ASR_FAULTS`` spec (cloudsvc.vaultstore.faultybackend) that pauses one backend call:
    ``fired`` appears when the call starts waiting, which continues once ``release`` exists."""

    spec: Path
    fired: Path
    release: Path

    @property
    def env(self) -> dict[str, str]:
        return {"ASR_FAULTS": str(self.spec)}


def pause_fault(root: Path, method: str = "get", prefix: str = "packs/", after: int = 0) -> PauseFault:
    """Pause the ``after + 1``-th ``method`` call on names starting with ``prefix``."""
    f = PauseFault(root / "faults.json", root / "fault-fired", root / "fault-release")
    f.spec.write_text(json.dumps([{"method": method, "prefix": prefix, "action": "pause", "after": after,
                                   "fired_file": str(f.fired), "release_file": str(f.release)}]))
    return f


def write_toml(path: Path, doc: dict[str, Any]) -> Path:
    lines = []
    tables = []
    for k, v in doc.items():
        if isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict)):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    for k, items in tables:
        if isinstance(items, dict):   # a [table]
            lines.append(f"\n[{k}]")
            lines += [f"{ik} = {json.dumps(iv)}" for ik, iv in items.items()]
            continue
        for item in items:
            lines.append(f"\n[[{k}]]")
            lines += [f"{ik} = {json.dumps(iv)}" for ik, iv in item.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Site:
    """A provider and its agents registered with a vault, run as daemons."""

    def __init__(self, cloud: Cloud, root: Path, vault: str, host: str = "127.0.0.1") -> None:
        self.cloud = cloud
        self.root = root
        self.vault = vault
        self.host = host   # where the provider listens (and its agents dial it)
        self.key = root / f"{vault}.key"
        self.provider_port = free_port()
        self.provider_proc: Proc | None = None
        self.agents: dict[str, Proc] = {}

    def new_key(self) -> Path:
        self.cloud.asr("vault", "key", self.vault, "--out", str(self.key))
        return self.key

    def register_provider(self, name: str = "prov1", *extra: str, proxy: str = "") -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / "asr-provider"), "register", "--key-file", str(self.key), "--name", name,
                "--state-dir", str(self.root / name), *extra]
        if proxy:
            argv += ["--proxy", proxy]
        return run(argv, env=self.cloud.env())

    def register_agent(self, host: str, *extra: str, provider: str = "prov1", proxy: str = "",
                       key: Path | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / "asr-agent"), "register", "--key-file", str(key or self.key), "--host", host,
                "--provider", f"{self.host}:{self.provider_port}", "--provider-name", provider,
                "--state-dir", str(self.root / host), *extra]
        if proxy:
            argv += ["--proxy", proxy]
        return run(argv, env=self.cloud.env())

    def provider_config(self, name: str = "prov1", clouds: list[dict[str, Any]] | None = None,
                        proxy: str = "", **extra: Any) -> Path:
        doc: dict[str, Any] = {"state_dir": str(self.root / name), "listen": f"{self.host}:{self.provider_port}",
                               "heartbeat_seconds": 0.5, "sync_seconds": 5, **extra}
        if proxy:
            doc["proxy"] = proxy
        if clouds:
            doc["clouds"] = clouds
        return write_toml(self.root / f"{name}.toml", doc)

    def agent_config(self, host: str, proxy: str = "", **extra: Any) -> Path:
        doc: dict[str, Any] = {"state_dir": str(self.root / host), "vm_dir": str(self.root / host / "vms"),
                               "heartbeat_seconds": 0.5, **extra}
        if proxy:
            doc["proxy"] = proxy
        return write_toml(self.root / f"{host}.toml", doc)

    def start_provider(self, name: str = "prov1", **kw: Any) -> Proc:
        cfg = self.provider_config(name, **kw)
        self.provider_proc = self.cloud.procs.start(f"provider-{name}", [str(BIN / "asr-provider"), "run",
                                                    "--config", str(cfg)], env=self.cloud.env())
        return self.provider_proc

    def start_agent(self, host: str, wrap: tuple[str, ...] = (), **kw: Any) -> Proc:
        """``wrap``: a command the agent runs under (``ip netns exec NS``: it execs the agent,
        so the process the harness stops is the agent itself)."""
        cfg = self.agent_config(host, **kw)
        p = self.cloud.procs.start(f"agent-{host}", [*wrap, str(BIN / "asr-agent"), "run", "--config", str(cfg)],
                                   env=self.cloud.env())
        self.agents[host] = p
        return p

    def status(self, name: str) -> dict[str, Any]:
        try:
            return dict(json.loads((self.root / name / "status.json").read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def link_state(self, name: str) -> str:
        return str(self.status(name).get("cloud", {}).get("state", ""))
