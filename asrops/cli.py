"""What every command-line entry point does with an error: print it (code, message,
possible causes, recommended action) on stderr and exit with its published code; and
with a reader that went away (``asr job list | head``): stop quietly."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from asrerrors import AsrError

# What a shell reports for a process killed by SIGPIPE (128 + 13), the exit code a POSIX
# tool has when its reader closes the pipe.
BROKEN_PIPE_EXIT = 141


def dispatch(args: argparse.Namespace) -> int:
    def run() -> int:
        try:
            return int(args.fn(args))
        except AsrError as err:
            print(err.render(), file=sys.stderr)
            return err.exit_code

    return quiet_broken_pipe(run)


def quiet_broken_pipe(run: Callable[[], int]) -> int:
    """Run a command; if its standard output is a pipe whose reader went away, exit with
    ``BROKEN_PIPE_EXIT`` and no traceback. Output is flushed here, inside the guard, since
    the interpreter's own flush at exit would report the broken pipe after we return."""
    try:
        try:
            code = run()
        except SystemExit:   # argparse's --help, --version and usage errors exit from inside
            sys.stdout.flush()
            raise
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python would try to flush stdout again at exit and complain: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE_EXIT
