"""The daemons as Windows services (pywin32; imported on Windows hosts only).

Each daemon has a service class of its own (``cloudsvc.winservice``, ``provider.winservice``,
``agent.winservice``) over :class:`DaemonService`, and the same command line::

    python -m agent.winservice install --config C:\\ProgramData\\SiteRecovery\\agent.toml
           [--startup auto|delayed|manual|disabled] [--username DOMAIN\\USER --password P]
           [--log-file PATH]
    python -m agent.winservice start|stop|remove
    python -m agent.winservice            # no arguments: what the service control manager runs

``install`` checks the configuration file as the daemon will read it (a bad one is refused
with its ASR-0014 before anything is registered), registers the service, and stores the
configuration path (and the log file) with it, as the service's registry parameters
(``HKLM\\SYSTEM\\CurrentControlSet\\Services\\<name>\\Parameters``: ``config``, ``log_file``).
It also sets the recovery actions systemd's ``Restart=on-failure`` gives on Linux: restart
after 5 s, 30 s and 60 s, the count reset after a day, failures that are not crashes included
(a daemon that exits with an error code). Installing again updates the registration.

Running: the service control manager starts ``python -m <module>`` (for a virtual
environment, its base interpreter with the environment's site directory added: the
environment's ``python.exe`` is a launcher whose child would not be the service process).
pywin32 calls :meth:`DaemonService.SvcRun` on a thread of its own, so the daemon core runs
there with a :class:`~asrops.lifecycle.Lifecycle` that installs no signal handlers and
answers to the service control manager (:class:`ScmManager`): ``SERVICE_RUNNING`` once the
daemon is ready, not before. A stop (or a system shutdown) sets the daemon's stop event and
waits for the graceful stop, reporting ``SERVICE_STOP_PENDING`` with checkpoints meanwhile.
A daemon that ends with an error is reported as stopped with an error, so the recovery
actions apply, and its coded error goes to the Application event log.

A service has no console: the daemon's log goes to ``log_file`` (default: beside the
configuration file, ``<ServiceName>.log``), kept to :data:`LOG_MAX_BYTES` with one older
file (``.1``) beside it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, ClassVar

import servicemanager  # type: ignore[import-not-found]  # pywin32, Windows only
import win32service  # type: ignore[import-not-found]
import win32serviceutil  # type: ignore[import-not-found]

from asrerrors import AlreadyExists, AsrError, NotFound, PermissionDenied, UsageError
from asrops.lifecycle import Lifecycle

START_WAIT_HINT_MS = 120_000  # opening the metadata DB and migrations may take a while
STOP_WAIT_HINT_MS = 30_000
STOP_WAIT_S = 60.0            # the stop handler reports progress this long, then lets the SCM judge
LOG_MAX_BYTES = 64 * 1024 * 1024
RESTART_DELAYS_MS = (5_000, 30_000, 60_000)
RESET_FAILURES_AFTER_S = 86_400

# winerror codes the command line turns into our errors
ERROR_ACCESS_DENIED = 5
ERROR_SERVICE_ALREADY_RUNNING = 1056
ERROR_SERVICE_DOES_NOT_EXIST = 1060
ERROR_SERVICE_NOT_ACTIVE = 1062
ERROR_SERVICE_EXISTS = 1073
SC_ACTION_RESTART = 1

STARTUP = {"auto": "SERVICE_AUTO_START", "delayed": "SERVICE_AUTO_START", "manual": "SERVICE_DEMAND_START",
           "disabled": "SERVICE_DISABLED"}


@dataclass(frozen=True)
class Daemon:
    """What a service class runs: ``run(config, life)`` is the daemon core; ``check(config)``
    reads the configuration as the daemon will (raising its InvalidConfig)."""

    module: str
    run: Callable[[str, Lifecycle], int]
    check: Callable[[str], object]


class ScmManager:
    """The daemon core's service manager on Windows (see ``asrops.lifecycle.ServiceManager``)."""

    ping_interval: float | None = None  # the service control manager has no watchdog

    def __init__(self, service: DaemonService) -> None:
        self.service = service

    def ready(self, status: str) -> None:
        self.service.ReportServiceStatus(win32service.SERVICE_RUNNING)
        servicemanager.LogInfoMsg(f"{self.service._svc_name_} running: {status}")

    def alive(self) -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def stopping(self) -> None:
        self.service.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=STOP_WAIT_HINT_MS)


class ServiceFailed(Exception):
    """Raised out of SvcRun so that pywin32 reports the service stopped with an error."""


class DaemonService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
    """A daemon as a Windows service (subclasses name the service and the daemon)."""

    _svc_name_: ClassVar[str]
    _svc_display_name_: ClassVar[str]
    _svc_description_: ClassVar[str]
    daemon: ClassVar[Daemon]

    def __init__(self, args: list[str]) -> None:
        super().__init__(args)
        self.life = Lifecycle(manager=ScmManager(self))
        self.finished = threading.Event()

    # ---- the service thread ------------------------------------------------------------------
    def SvcRun(self) -> None:  # noqa: N802 - pywin32's names
        self.ReportServiceStatus(win32service.SERVICE_START_PENDING, waitHint=START_WAIT_HINT_MS)
        try:
            config = str(win32serviceutil.GetServiceCustomOption(self._svc_name_, "config") or "")
            log_file = str(win32serviceutil.GetServiceCustomOption(self._svc_name_, "log_file") or "") or \
                default_log_file(self._svc_name_, config)
            with logging_to(log_file):
                code = self._run(config)
        finally:
            self.finished.set()
        if code != 0:
            raise ServiceFailed(f"{self._svc_name_} stopped with exit code {code}")
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)  # pywin32 reports STOPPED next

    def _run(self, config: str) -> int:
        if not config:
            servicemanager.LogErrorMsg(f"{self._svc_name_} has no configuration path; install it again with "
                                       f"python -m {self.daemon.module} install --config PATH")
            return UsageError.exit_code
        servicemanager.LogInfoMsg(f"{self._svc_name_} starting with {config}")
        try:
            return self.daemon.run(config, self.life)
        except AsrError as err:
            print(err.render(), file=sys.stderr)
            servicemanager.LogErrorMsg(f"{self._svc_name_}: {err.render()}")
            return err.exit_code
        except Exception:  # noqa: BLE001 - whatever it was, the event log must say it
            text = traceback.format_exc()
            print(text, file=sys.stderr)
            servicemanager.LogErrorMsg(f"{self._svc_name_} failed: {text}")
            return 1

    # ---- the service control manager's thread ---------------------------------------------------
    def SvcStop(self) -> None:  # noqa: N802
        """Stop gracefully: set the daemon's stop event, then wait for the service thread to
        finish, telling the service control manager it is still stopping."""
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=STOP_WAIT_HINT_MS)
        self.life.request_stop("service control manager: stop")
        waited = 0.0
        step = STOP_WAIT_HINT_MS / 2000
        while not self.finished.wait(step) and waited < STOP_WAIT_S:
            waited += step
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=STOP_WAIT_HINT_MS)

    SvcShutdown = SvcStop  # the system is shutting down: the same graceful stop


def default_log_file(service_name: str, config: str) -> str:
    return os.path.join(os.path.dirname(config) or ".", f"{service_name}.log")


class RollingLog:
    """A text stream that keeps its file under ``max_bytes``, with one older file (``.1``)."""

    def __init__(self, path: str, max_bytes: int = LOG_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._f = self._open()

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8", errors="replace")

    def write(self, text: str) -> int:
        with self._lock:
            if self._f.tell() + len(text) > self.max_bytes and self._f.tell() > 0:
                self._f.close()
                os.replace(self.path, self.path + ".1")
                self._f = self._open()
            n = self._f.write(text)
            self._f.flush()
            return n

    def flush(self) -> None:
        with self._lock:
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            self._f.close()


@contextmanager
def logging_to(path: str) -> Iterator[None]:
    """The daemon's stderr (its log) goes to ``path`` for the block."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    stream = RollingLog(path)
    saved = sys.stderr
    sys.stderr = stream  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stderr = saved
        stream.close()


# ---- the command line -----------------------------------------------------------------------------
def service_command(module: str) -> tuple[str, str]:
    """The program and the arguments the service control manager runs."""
    if sys.prefix == sys.base_prefix:
        return sys.executable, subprocess.list2cmdline(["-m", module])
    # A virtual environment's python.exe only starts the base interpreter as its child: run
    # the base interpreter itself, with the environment's packages (and their .pth files).
    site_dir = sysconfig.get_paths()["purelib"]
    code = (f"import runpy, site; site.addsitedir({site_dir!r}); "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    return getattr(sys, "_base_executable", sys.executable), subprocess.list2cmdline(["-c", code])


def _scm_error(err: Any, service: str, doing: str) -> AsrError:
    code = getattr(err, "winerror", 0)
    text = f"{doing} {service} failed: {getattr(err, 'strerror', err)}"
    if code == ERROR_ACCESS_DENIED:
        return PermissionDenied(text, action="Run the command from an elevated (Administrator) prompt.")
    if code == ERROR_SERVICE_DOES_NOT_EXIST:
        return NotFound(text, action="Install the service first (install --config PATH).")
    if code == ERROR_SERVICE_EXISTS:
        return AlreadyExists(text)
    return AsrError(text)


def install(cls: type[DaemonService], args: argparse.Namespace) -> None:
    config = os.path.abspath(args.config)
    cls.daemon.check(config)  # refuse a configuration the daemon would refuse
    if bool(args.username) != bool(args.password):
        raise UsageError("--username and --password go together")
    exe, exe_args = service_command(cls.daemon.module)
    options: dict[str, Any] = dict(
        startType=getattr(win32service, STARTUP[args.startup]), exeName=exe, exeArgs=exe_args,
        description=cls._svc_description_, userName=args.username or None, password=args.password or None,
        delayedstart={"delayed": True, "auto": False}.get(args.startup))
    try:
        try:
            win32serviceutil.InstallService(None, cls._svc_name_, cls._svc_display_name_, **options)
            done = "installed"
        except win32service.error as err:
            if getattr(err, "winerror", 0) != ERROR_SERVICE_EXISTS:
                raise
            win32serviceutil.ChangeServiceConfig(None, cls._svc_name_, displayName=cls._svc_display_name_, **options)
            done = "updated"
        win32serviceutil.SetServiceCustomOption(cls._svc_name_, "config", config)
        win32serviceutil.SetServiceCustomOption(cls._svc_name_, "log_file",
                                                os.path.abspath(args.log_file) if args.log_file else "")
        _set_recovery(cls._svc_name_)
    except win32service.error as err:
        raise _scm_error(err, cls._svc_name_, "installing") from err
    print(f"service {cls._svc_name_} {done}: {config}")


def _set_recovery(name: str) -> None:
    scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ALL_ACCESS)
    try:
        svc = win32service.OpenService(scm, name, win32service.SERVICE_ALL_ACCESS)
        try:
            win32service.ChangeServiceConfig2(svc, win32service.SERVICE_CONFIG_FAILURE_ACTIONS, {
                "ResetPeriod": RESET_FAILURES_AFTER_S, "RebootMsg": None, "Command": None,
                "Actions": [(SC_ACTION_RESTART, ms) for ms in RESTART_DELAYS_MS]})
            win32service.ChangeServiceConfig2(svc, win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True)
        finally:
            win32service.CloseServiceHandle(svc)
    finally:
        win32service.CloseServiceHandle(scm)


def control(cls: type[DaemonService], action: str) -> None:
    name = cls._svc_name_
    try:
        if action == "remove":
            win32serviceutil.RemoveService(name)
        elif action == "start":
            win32serviceutil.StartService(name)
            win32serviceutil.WaitForServiceStatus(name, win32service.SERVICE_RUNNING, START_WAIT_HINT_MS // 1000)
        else:
            win32serviceutil.StopServiceWithDeps(name, waitSecs=int(STOP_WAIT_S))
    except win32service.error as err:
        code = getattr(err, "winerror", 0)
        if (action, code) in (("start", ERROR_SERVICE_ALREADY_RUNNING), ("stop", ERROR_SERVICE_NOT_ACTIVE)):
            print(f"service {name} was already {'running' if action == 'start' else 'stopped'}")
            return
        raise _scm_error(err, name, {"remove": "removing", "start": "starting", "stop": "stopping"}[action]) from err
    print(f"service {name} {'removed' if action == 'remove' else action + 'ed' if action == 'start' else 'stopped'}")


def parser(cls: type[DaemonService]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {cls.daemon.module}",
                                description=f"{cls._svc_display_name_} as the Windows service {cls._svc_name_}")
    sub = p.add_subparsers(dest="action", required=True)
    i = sub.add_parser("install", help="register the service (again: update it) with its configuration file")
    i.add_argument("--config", required=True, help="the daemon's configuration file (stored with the service)")
    i.add_argument("--startup", choices=sorted(STARTUP), default="auto")
    i.add_argument("--username", default="", help="account to run as (default LocalSystem)")
    i.add_argument("--password", default="")
    i.add_argument("--log-file", default="", help="where the daemon logs (default: beside the configuration)")
    for action, text in (("remove", "unregister the service"), ("start", "start it and wait until it runs"),
                         ("stop", "stop it gracefully and wait")):
        sub.add_parser(action, help=text)
    return p


def main(cls: type[DaemonService], argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        # started by the service control manager
        servicemanager.Initialize()
        servicemanager.PrepareToHostSingle(cls)
        servicemanager.StartServiceCtrlDispatcher()
        return 0
    args = parser(cls).parse_args(argv)
    try:
        if args.action == "install":
            install(cls, args)
        else:
            control(cls, args.action)
    except AsrError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_code
    return 0


__all__ = ["Daemon", "DaemonService", "ScmManager", "main", "service_command"]
