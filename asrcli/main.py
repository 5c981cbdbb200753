"""asr: the operator's tool (the portal and PowerShell of Azure Site Recovery).

Every command takes ``--output table|json`` (``--json`` is ``--output json``); the JSON of
each command has a JSON Schema in ``asrcli/schemas/`` (``asr schema COMMAND`` prints it).
Everything inside a vault takes ``--vault`` (or ASR_VAULT). Exit status: 0 success,
otherwise the error's published exit code (see asrerrors); 130 when interrupted, 141 when
the reader of the output went away (``asr job list | head``).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from asrcli import (
    billing_cmds,
    failover_cmds,
    foundation_cmds,
    local_cmds,
    operator_cmds,
    point_cmds,
    protection_cmds,
    sitetosite_cmds,
)
from asrcli.client import Client
from asrcli.output import render
from asrerrors import AsrError, UsageError
from asrops.cli import quiet_broken_pipe


def package_version() -> str:
    try:
        return version("site-recovery")
    except PackageNotFoundError:   # run from a source tree that was never installed
        return "unknown"


def _vault_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vault", default=os.environ.get("ASR_VAULT"), help="vault name or id (or ASR_VAULT)")


def _add_common(p: argparse.ArgumentParser) -> None:
    """Every leaf command accepts --output/--json/--endpoint/--credentials, wherever they are
    written, and knows its own name (``command``: the schema it answers with)."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        p.set_defaults(command=p.prog.split(" ", 1)[1])
        if not p.get_default("local"):
            p.add_argument("--endpoint", help="cloud service HOST:PORT, or several as HOST:PORT,HOST:PORT (the "
                                                "first that accepts a connection; or ASR_ENDPOINT)")
            p.add_argument("--credentials", help="operator credential file (or ASR_CREDENTIALS)")
        p.add_argument("--output", "-o", choices=["table", "json"], default="table",
                       help="table for people (default) or json for scripts")
        p.add_argument("--json", dest="output", action="store_const", const="json",
                       help="the same as --output json")
        return
    for action in subs:
        for child in set(action.choices.values()):
            _add_common(child)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr", description="Site Recovery operator tool")
    p.add_argument("--version", action="version", version=f"asr {package_version()}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    foundation_cmds.add_parsers(sub, _vault_arg)
    protection_cmds.add_parsers(sub, _vault_arg)
    sitetosite_cmds.add_parsers(sub, _vault_arg)
    point_cmds.add_parsers(sub, _vault_arg)
    failover_cmds.add_parsers(sub, _vault_arg)
    billing_cmds.add_parsers(sub, _vault_arg)
    operator_cmds.add_parsers(sub, _vault_arg)
    local_cmds.add_parsers(sub, parser)
    _add_common(p)
    return p


def run(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.json = args.output == "json"
    client: Client | None = None
    try:
        if getattr(args, "local", False):
            doc, printer = args.fn(args)
        else:
            if hasattr(args, "vault") and not args.vault:
                raise UsageError("no vault given", action="Pass --vault NAME or set ASR_VAULT.")
            client = Client(args.endpoint, args.credentials)
            doc, printer = args.fn(client, args)
        render(doc, printer, args.json)
        return int(getattr(args, "exit_code", 0))
    except AsrError as err:
        if args.json:
            render({"error": err.to_dict()}, print, True)
        print(err.render(), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        job = getattr(args, "waiting_for", "")
        print("\ninterrupted" + (f"; job {job} goes on: follow it with 'asr job wait {job}'" if job else ""),
              file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()


def main(argv: list[str] | None = None) -> int:
    return quiet_broken_pipe(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
