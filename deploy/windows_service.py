"""Windows service entry point for the provider and the agent (pywin32, Windows only).

    python deploy\\windows_service.py --startup auto install   # as AsrProvider / AsrAgent
    set ASR_SERVICE_ROLE=agent & set ASR_SERVICE_CONFIG=C:\\ProgramData\\asr\\agent.toml

The service runs the same ``run(config)`` as the Linux daemons in a thread and turns the
service manager's stop request into the same graceful stop as SIGTERM. pywin32 ships wheels
for Windows only, so this file is not imported anywhere on Linux.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import servicemanager  # type: ignore[import-not-found]  # pywin32, Windows only
import win32service  # type: ignore[import-not-found]
import win32serviceutil  # type: ignore[import-not-found]

ROLE = os.environ.get("ASR_SERVICE_ROLE", "provider")


class AsrService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
    _svc_name_ = "AsrProvider" if ROLE == "provider" else "AsrAgent"
    _svc_display_name_ = f"Site Recovery {ROLE}"

    def SvcDoRun(self) -> None:  # noqa: N802 - pywin32's names
        config = os.environ["ASR_SERVICE_CONFIG"]
        if ROLE == "provider":
            from provider.daemon import run
        else:
            from agent.daemon import run
        servicemanager.LogInfoMsg(f"starting {self._svc_name_} with {config}")
        self.worker = threading.Thread(target=run, args=(config,), daemon=True)
        self.worker.start()
        self.worker.join()

    def SvcStop(self) -> None:  # noqa: N802
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
        os.kill(os.getpid(), signal.SIGINT)  # the daemons' Lifecycle treats it as SIGTERM


if __name__ == "__main__":
    win32serviceutil.HandleCommandLine(AsrService)
    sys.exit(0)
