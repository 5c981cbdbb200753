"""asr: the operator's tool (the portal and PowerShell of Azure Site Recovery).

Every command takes --json; everything inside a vault takes --vault (or ASR_VAULT).
Exit status: 0 success, otherwise the error's published exit code (see asrerrors).
"""

from __future__ import annotations

import argparse
import os
import sys

from asrcli import billing_cmds, failover_cmds, foundation_cmds, point_cmds, protection_cmds
from asrcli.client import Client
from asrerrors import AsrError, UsageError


def _vault_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vault", default=os.environ.get("ASR_VAULT"), help="vault name or id (or ASR_VAULT)")


def _add_common(p: argparse.ArgumentParser) -> None:
    """Every leaf command accepts --json/--endpoint/--credentials, wherever they are written."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        p.add_argument("--endpoint", help="cloud service HOST:PORT (or ASR_ENDPOINT)")
        p.add_argument("--credentials", help="operator credential file (or ASR_CREDENTIALS)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return
    for action in subs:
        for child in set(action.choices.values()):
            _add_common(child)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr", description="Site Recovery operator tool")
    sub = p.add_subparsers(dest="cmd", required=True)
    foundation_cmds.add_parsers(sub, _vault_arg)
    protection_cmds.add_parsers(sub, _vault_arg)
    point_cmds.add_parsers(sub, _vault_arg)
    failover_cmds.add_parsers(sub, _vault_arg)
    billing_cmds.add_parsers(sub, _vault_arg)
    _add_common(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    client: Client | None = None
    try:
        if hasattr(args, "vault") and not args.vault:
            raise UsageError("no vault given", action="Pass --vault NAME or set ASR_VAULT.")
        client = Client(args.endpoint, args.credentials)
        doc, printer = args.fn(client, args)
        foundation_cmds.render(doc, printer, args.json)
        return int(getattr(args, "exit_code", 0))
    except AsrError as err:
        if args.json:
            foundation_cmds.render({"error": err.to_dict()}, None, True)
        print(err.render(), file=sys.stderr)
        return err.exit_code
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
