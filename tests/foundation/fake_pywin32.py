"""A fake Windows service control manager, as the pywin32 modules ``win32service``,
``win32serviceutil`` and ``servicemanager`` (tests only; pywin32 exists on Windows only).

It keeps what the real one would: the registered services and their registry parameters,
the status reports (``SetServiceStatus``), the Application event log, and it runs a service
the way pywin32's service host does: ``StartServiceCtrlDispatcher`` calls the class's
``SvcRun`` on a thread of its own ("service_main"), reports ``SERVICE_STOPPED`` (with
``ERROR_SERVICE_SPECIFIC_ERROR`` if ``SvcRun`` raised) when it returns, and delivers control
requests (:meth:`FakeScm.control`) to the registered handler on the dispatcher's thread.
``ServiceFramework`` is modelled on pywin32's own (``win32/Lib/win32serviceutil.py``).
"""

from __future__ import annotations

import queue
import threading
import types
from dataclasses import dataclass, field
from typing import Any

SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_CONTROL_STOP, SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_SHUTDOWN = 1, 4, 5
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN = 1, 4
SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_AUTO_START, SERVICE_DEMAND_START, SERVICE_DISABLED = 2, 3, 4
SC_MANAGER_ALL_ACCESS, SERVICE_ALL_ACCESS = 0xF003F, 0xF01FF
SERVICE_CONFIG_FAILURE_ACTIONS, SERVICE_CONFIG_FAILURE_ACTIONS_FLAG = 2, 4
ERROR_SERVICE_SPECIFIC_ERROR = 1066
ERROR_SERVICE_DOES_NOT_EXIST, ERROR_SERVICE_EXISTS = 1060, 1073


class Error(Exception):
    """pywintypes.error: (winerror, funcname, strerror)."""

    def __init__(self, winerror: int, funcname: str, strerror: str) -> None:
        super().__init__(winerror, funcname, strerror)
        self.winerror, self.funcname, self.strerror = winerror, funcname, strerror


@dataclass
class Status:
    service: str
    state: int
    accepted: int
    win32_exit: int
    service_exit: int
    checkpoint: int
    wait_hint: int


@dataclass
class FakeScm:
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    recovery: dict[str, dict[int, Any]] = field(default_factory=dict)
    statuses: list[Status] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    hosted: Any = None
    on_status: list[Any] = field(default_factory=list)  # called with each Status as it is reported
    service_threads: list[threading.Thread] = field(default_factory=list)
    _controls: queue.Queue[tuple[int, threading.Event, list[Any]]] = field(default_factory=queue.Queue)
    _handlers: dict[str, Any] = field(default_factory=dict)

    def report(self, status: Status) -> None:
        self.statuses.append(status)
        for hook in self.on_status:
            hook(status)

    def states(self, service: str) -> list[int]:
        return [s.state for s in self.statuses if s.service == service]

    def control(self, code: int) -> Any:
        """Deliver a control request (on the dispatcher's thread); returns the handler's result."""
        done: threading.Event = threading.Event()
        out: list[Any] = []
        self._controls.put((code, done, out))
        assert done.wait(120), "the control handler did not return"
        return out[0] if out else None

    # ---- the modules -------------------------------------------------------------------------
    def modules(self) -> dict[str, types.ModuleType]:
        return {"win32service": self._win32service(), "win32serviceutil": self._win32serviceutil(),
                "servicemanager": self._servicemanager()}

    def _win32service(self) -> types.ModuleType:
        m = types.ModuleType("win32service")
        for name, value in globals().items():
            if name.startswith(("SERVICE_", "SC_")):
                setattr(m, name, value)
        m.error = Error  # type: ignore[attr-defined]
        scm = self

        def SetServiceStatus(handle: str, status: tuple[int, ...]) -> None:  # noqa: N802
            assert status[0] == SERVICE_WIN32_OWN_PROCESS
            scm.report(Status(handle, *status[1:]))

        def OpenSCManager(machine: Any, db: Any, access: int) -> str:  # noqa: N802
            return "scm"

        def OpenService(hscm: str, name: str, access: int) -> str:  # noqa: N802
            if name not in scm.services:
                raise Error(ERROR_SERVICE_DOES_NOT_EXIST, "OpenService", "The specified service does not exist")
            return name

        def CloseServiceHandle(handle: str) -> None:  # noqa: N802
            pass

        def ChangeServiceConfig2(handle: str, level: int, info: Any) -> None:  # noqa: N802
            if level == SERVICE_CONFIG_FAILURE_ACTIONS:
                assert set(info) == {"ResetPeriod", "RebootMsg", "Command", "Actions"}, info
                assert all(len(a) == 2 for a in info["Actions"]), info
            scm.recovery.setdefault(handle, {})[level] = info

        for fn in (SetServiceStatus, OpenSCManager, OpenService, CloseServiceHandle, ChangeServiceConfig2):
            setattr(m, fn.__name__, fn)
        return m

    def _win32serviceutil(self) -> types.ModuleType:
        m = types.ModuleType("win32serviceutil")
        scm = self
        servicemanager_name = "servicemanager"

        class ServiceFramework:
            _svc_deps_ = None
            _exe_name_ = None
            _exe_args_ = None
            _svc_description_: str | None = None

            def __init__(self, args: list[str]) -> None:
                import importlib

                sm = importlib.import_module(servicemanager_name)
                self.ssh = sm.RegisterServiceCtrlHandler(args[0], self.ServiceCtrlHandlerEx, True)
                sm.SetEventSourceName(self._svc_name_)  # type: ignore[attr-defined]
                self.checkPoint = 0

            def GetAcceptedControls(self) -> int:  # noqa: N802
                accepted = 0
                if hasattr(self, "SvcStop"):
                    accepted |= SERVICE_ACCEPT_STOP
                if hasattr(self, "SvcShutdown"):
                    accepted |= SERVICE_ACCEPT_SHUTDOWN
                return accepted

            def ReportServiceStatus(self, serviceStatus: int, waitHint: int = 5000,  # noqa: N802, N803
                                    win32ExitCode: int = 0, svcExitCode: int = 0) -> None:  # noqa: N803
                accepted = 0 if serviceStatus == SERVICE_START_PENDING else self.GetAcceptedControls()
                if serviceStatus in (SERVICE_RUNNING, SERVICE_STOPPED):
                    checkpoint = 0
                else:
                    self.checkPoint += 1
                    checkpoint = self.checkPoint
                scm.report(Status(self.ssh, serviceStatus, accepted, win32ExitCode, svcExitCode, checkpoint,
                                  waitHint))

            def SvcInterrogate(self) -> None:  # noqa: N802
                self.ReportServiceStatus(SERVICE_RUNNING)

            def ServiceCtrlHandlerEx(self, control: int, event_type: int, data: Any) -> Any:  # noqa: N802
                if control == SERVICE_CONTROL_STOP:
                    return self.SvcStop()  # type: ignore[attr-defined]
                if control == SERVICE_CONTROL_SHUTDOWN:
                    return self.SvcShutdown()  # type: ignore[attr-defined]
                if control == SERVICE_CONTROL_INTERROGATE:
                    return self.SvcInterrogate()
                return None

            def SvcRun(self) -> None:  # noqa: N802
                self.ReportServiceStatus(SERVICE_RUNNING)
                self.SvcDoRun()  # type: ignore[attr-defined]
                self.ReportServiceStatus(SERVICE_STOP_PENDING)

        def InstallService(pythonClassString: Any, serviceName: str, displayName: str,  # noqa: N802, N803
                           **kw: Any) -> None:
            if serviceName in scm.services:
                raise Error(ERROR_SERVICE_EXISTS, "CreateService", "The specified service already exists")
            scm.calls.append(("InstallService", serviceName))
            scm.services[serviceName] = {"displayName": displayName, **kw}

        def ChangeServiceConfig(pythonClassString: Any, serviceName: str, **kw: Any) -> None:  # noqa: N802, N803
            scm.calls.append(("ChangeServiceConfig", serviceName))
            scm.services[serviceName].update(kw)

        def RemoveService(serviceName: str) -> None:  # noqa: N802, N803
            scm.calls.append(("RemoveService", serviceName))
            if scm.services.pop(serviceName, None) is None:
                raise Error(ERROR_SERVICE_DOES_NOT_EXIST, "OpenService", "The specified service does not exist")
            scm.parameters.pop(serviceName, None)

        def StartService(serviceName: str, args: Any = None, machine: Any = None) -> None:  # noqa: N802, N803
            scm.calls.append(("StartService", serviceName))

        def WaitForServiceStatus(serviceName: str, status: int, waitSecs: int, machine: Any = None) -> None:  # noqa: N802, N803
            scm.calls.append(("WaitForServiceStatus", serviceName))

        def StopServiceWithDeps(serviceName: str, machine: Any = None, waitSecs: int = 30) -> None:  # noqa: N802, N803
            scm.calls.append(("StopServiceWithDeps", serviceName))

        def SetServiceCustomOption(serviceName: str, option: str, value: Any) -> None:  # noqa: N802, N803
            scm.parameters.setdefault(serviceName, {})[option] = value

        def GetServiceCustomOption(serviceName: str, option: str, defaultValue: Any = None) -> Any:  # noqa: N802, N803
            return scm.parameters.get(serviceName, {}).get(option, defaultValue)

        m.ServiceFramework = ServiceFramework  # type: ignore[attr-defined]
        for fn in (InstallService, ChangeServiceConfig, RemoveService, StartService, WaitForServiceStatus,
                   StopServiceWithDeps, SetServiceCustomOption, GetServiceCustomOption):
            setattr(m, fn.__name__, fn)
        return m

    def _servicemanager(self) -> types.ModuleType:
        m = types.ModuleType("servicemanager")
        scm = self

        def RegisterServiceCtrlHandler(name: str, handler: Any, ex: bool) -> str:  # noqa: N802
            scm._handlers[name] = handler
            return name

        def SetEventSourceName(name: str) -> None:  # noqa: N802
            pass

        def log(level: str) -> Any:
            return lambda msg: scm.events.append((level, str(msg)))

        def Initialize(*args: Any) -> None:  # noqa: N802
            scm.calls.append(("Initialize", ""))

        def PrepareToHostSingle(klass: Any = None) -> None:  # noqa: N802
            scm.hosted = klass

        def StartServiceCtrlDispatcher() -> None:  # noqa: N802
            """service_main on a thread of its own; controls on this (the dispatcher's) thread."""
            klass = scm.hosted
            name = klass._svc_name_
            failed: list[BaseException] = []

            def service_main() -> None:
                instance = klass([name])
                scm.report(Status(name, SERVICE_START_PENDING, 0, 0, 0, 0, 5000))
                try:
                    instance.SvcRun()
                except BaseException as exc:  # noqa: BLE001 - what the C framework does
                    failed.append(exc)
                    scm.events.append(("error", f"{type(exc).__name__}: {exc}"))
                scm.report(Status(name, SERVICE_STOPPED, 0, ERROR_SERVICE_SPECIFIC_ERROR if failed else 0,
                                  1 if failed else 0, 0, 0))

            t = threading.Thread(target=service_main, name="service_main")
            scm.service_threads.append(t)
            t.start()
            while t.is_alive():
                try:
                    code, done, out = scm._controls.get(timeout=0.05)
                except queue.Empty:
                    continue
                out.append(scm._handlers[name](code, 0, None))
                done.set()
            while not scm._controls.empty():  # requests that came too late: the service has stopped
                scm._controls.get()[1].set()

        for fn in (RegisterServiceCtrlHandler, SetEventSourceName, Initialize, PrepareToHostSingle,
                   StartServiceCtrlDispatcher):
            setattr(m, fn.__name__, fn)
        m.LogInfoMsg = log("info")  # type: ignore[attr-defined]
        m.LogWarningMsg = log("warning")  # type: ignore[attr-defined]
        m.LogErrorMsg = log("error")  # type: ignore[attr-defined]
        return m
