"""asr-provider: the VMM-side server. Registers with a vault, syncs clouds/hosts/VMs and
carries out the cloud's commands."""

from __future__ import annotations

import argparse
import json
import socket
import sys

from asrchannel.proxy import parse_proxy
from asrclock import from_environment
from asrops.cli import dispatch
from provider.config import load as load_config
from registration.enrol import VERSION, register
from registration.status_cmd import add_status_command


def cmd_register(args: argparse.Namespace) -> int:
    proxy = parse_proxy(args.proxy) if args.proxy else None
    fingerprint = ""
    if args.encryption:
        from provider.encryption import ensure_customer_key

        fingerprint = ensure_customer_key(args.state_dir)
    ident = register(
        key_file=args.key_file, role="provider", name=args.name, state_dir=args.state_dir,
        clock=from_environment(), proxy=proxy, force=args.force, encryption=args.encryption,
        key_fingerprint=fingerprint, addresses=args.address or [socket.getfqdn()],
    )
    doc = {"identity": ident.identity, "vault": ident.vault_name, "vault_id": ident.vault_id,
           "state_dir": ident.state_dir, "encryption": ident.encryption}
    print(json.dumps(doc, indent=2) if args.json else
          f"registered provider {args.name} with vault {ident.vault_name} as {ident.identity}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from provider.daemon import run

    return run(args.config)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr-provider", description="Site Recovery provider (beside VMM)")
    p.add_argument("--version", action="version", version=VERSION)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("register", help="register with a vault using its key file")
    r.add_argument("--key-file", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--state-dir", required=True)
    r.add_argument("--proxy")
    r.add_argument("--encryption", action="store_true", help="customer-managed encryption for this site")
    r.add_argument("--force", action="store_true", help="replace an existing registration (revokes it)")
    r.add_argument("--address", action="append", default=[],
                   help="DNS name or IP the site's agents dial (repeatable; default: this host's FQDN)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=cmd_register)
    s = sub.add_parser("run", help="run the provider")
    s.add_argument("--config", required=True)
    s.set_defaults(fn=cmd_run)
    add_status_command(sub, "provider", lambda path: load_config(path).state_dir)
    try:
        from provider.vm_cmds import add_parsers
    except ImportError:
        pass
    else:
        add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return dispatch(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
