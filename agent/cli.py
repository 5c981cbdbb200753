"""asr-agent: the host agent. Registers with a vault, runs the local hypervisor's VMs,
tracks disk changes and ships them to the vault."""

from __future__ import annotations

import argparse
import json
import sys

from agent.config import load as load_config
from asrchannel.proxy import parse_proxy
from asrclock import from_environment
from asrerrors import UsageError
from asrops.cli import dispatch, quiet_broken_pipe
from registration.enrol import VERSION, register
from registration.status_cmd import add_status_command


def _hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--provider {value!r} must be HOST:PORT")
    return value


def cmd_register(args: argparse.Namespace) -> int:
    proxy = parse_proxy(args.proxy) if args.proxy else None
    ident = register(
        key_file=args.key_file, role="agent", name=args.host, state_dir=args.state_dir,
        clock=from_environment(), proxy=proxy, force=args.force,
        provider=args.provider_name or "", provider_address=_hostport(args.provider),
        addresses=args.address,
    )
    doc = {"identity": ident.identity, "vault": ident.vault_name, "vault_id": ident.vault_id,
           "state_dir": ident.state_dir, "provider": args.provider}
    print(json.dumps(doc, indent=2) if args.json else
          f"registered agent {args.host} with vault {ident.vault_name} as {ident.identity}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.daemon import run

    return run(args.config)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr-agent", description="Site Recovery host agent")
    p.add_argument("--version", action="version", version=VERSION)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("register", help="register this host with a vault using its key file")
    r.add_argument("--key-file", required=True)
    r.add_argument("--host", required=True, help="this host's name")
    r.add_argument("--provider", required=True, help="HOST:PORT where the site's provider listens")
    r.add_argument("--provider-name", default="", help="the provider's registered name")
    r.add_argument("--state-dir", required=True)
    r.add_argument("--proxy")
    r.add_argument("--address", action="append", default=[],
                   help="site-to-site: a DNS name or IP address other hosts reach this host's replica service "
                        "at (repeatable); the certificate then also serves TLS for this host's name and these")
    r.add_argument("--force", action="store_true")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=cmd_register)
    s = sub.add_parser("run", help="run the agent")
    s.add_argument("--config", required=True)
    s.set_defaults(fn=cmd_run)
    add_status_command(sub, "agent", lambda path: load_config(path).state_dir)
    try:
        from agent.hypervisor.cli import register_vm_commands
    except ImportError:
        pass
    else:
        register_vm_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "vm":
        from agent.hypervisor.cli import run_vm_command

        return quiet_broken_pipe(lambda: int(run_vm_command(args)))
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
