"""What every command-line entry point does with an error: print it (code, message,
possible causes, recommended action) on stderr and exit with its published code."""

from __future__ import annotations

import argparse
import sys

from asrerrors import AsrError


def dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.fn(args))
    except AsrError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_code
