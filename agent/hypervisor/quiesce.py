"""The VM's application quiesce hook, run before an app-consistent snapshot.

The hook is an argv (``asr-agent vm create ... --quiesce-hook ARGV...``), run without a shell
in a session of its own; exit status 0 means the application is quiesced. Anything else (a
non-zero exit, no exit within :data:`HOOK_TIMEOUT_S`, a program that cannot be started) is
:class:`asrerrors.QuiesceFailed` (ASR-0045), whose message names the hook, what happened and
the tail of its output. The replication cycle then takes a crash-consistent snapshot instead,
in the same cycle (``agent.replication.cycle``): a broken hook costs app-consistency, never
the point.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Sequence

from asrerrors import QuiesceFailed

HOOK_TIMEOUT_S = 300.0
OUTPUT_TAIL = 500  # characters of the hook's output kept in the message


def _tail(out: bytes | str | None) -> str:
    if not out:
        return ""
    text = out.decode("utf-8", "replace") if isinstance(out, bytes) else out
    text = " ".join(text.split())  # one line: it travels in a health message
    return text[-OUTPUT_TAIL:]


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill the hook and its children (its session on POSIX; its process tree on Windows,
    which has no process groups to signal)."""
    if hasattr(os, "killpg"):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(proc.pid)], capture_output=True, check=False)


def run_hook(argv: Sequence[str]) -> None:
    """Run the hook; raise QuiesceFailed unless it exits 0 in time. Messages read
    ``quiesce hook ARGV failed: exit 3: <output tail>`` (or ``signal N``, ``no exit within
    300 s``, ``it could not be run (...)``)."""
    shown = shlex.join(argv)
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise QuiesceFailed(f"quiesce hook {shown} failed: it could not be run ({exc.strerror or exc})",
                            causes=("The hook's program does not exist or is not executable.",)) from exc
    try:
        out, _ = proc.communicate(timeout=HOOK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # the whole session: a hook's children must not keep the pipe (and this cycle) open
        _kill_tree(proc)
        out, _ = proc.communicate()
        tail = _tail(out)
        raise QuiesceFailed(f"quiesce hook {shown} failed: no exit within {HOOK_TIMEOUT_S:g} s"
                            + (f": {tail}" if tail else ""),
                            causes=("The application did not quiesce in time.",)) from None
    if proc.returncode != 0:
        tail = _tail(out)
        how = f"exit {proc.returncode}" if proc.returncode > 0 else f"signal {-proc.returncode}"
        raise QuiesceFailed(f"quiesce hook {shown} failed: {how}" + (f": {tail}" if tail else ""))
