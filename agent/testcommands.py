"""Test-only command injection (``ASR_TEST_COMMAND_DIR``, honoured only with
``ASR_TEST_MODE=1``): commands the cloud side cannot send yet (or a test wants to send without
a provider) are applied exactly as the provider's would be.

A test writes ``DIR/<name>.cmd`` (a serialised ``asr.v1.Command``, written atomically); the
agent applies it through ``ProviderLink.apply`` (the applied-command log, the handlers, the
fencing rules) and writes ``DIR/<name>.result`` (a serialised ``CommandResult``). A command
with a result is not looked at again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from asrpb import control_pb2
from durablefile import write_atomic

log = logging.getLogger("asr-agent")


def run(directory: str, apply: Callable[[control_pb2.Command], control_pb2.CommandResult],
        stopping: threading.Event) -> None:
    log.warning("test command injection is on", extra={"fields": {"dir": directory}})
    while not stopping.is_set():
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            names = []
        for name in names:
            if not name.endswith(".cmd"):
                continue
            result_path = os.path.join(directory, name[:-4] + ".result")
            if os.path.exists(result_path):
                continue
            with open(os.path.join(directory, name), "rb") as f:
                cmd = control_pb2.Command.FromString(f.read())
            write_atomic(result_path, apply(cmd).SerializeToString())
        stopping.wait(0.1)
