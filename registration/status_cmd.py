"""`status --config FILE` of the provider and the agent: identity and link states.

For people (the default) one line per link; ``--output json`` (or ``--json``) the same as a
document, with times as RFC 3339 UTC strings like every other JSON output of ours (the
status file itself keeps seconds since the epoch).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from asrclock import from_iso, iso, iso_json
from registration.state import load, read_status


def _is_time(key: str, value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and (
        key == "at" or key.endswith("_at") or key.startswith("last_"))


def status_doc(state_dir: str) -> dict[str, Any]:
    ident = load(state_dir)
    doc: dict[str, Any] = {"identity": ident.identity, "vault": ident.vault_name}
    for section, body in read_status(state_dir).items():
        if isinstance(body, dict):
            body = {k: iso_json(float(v)) if _is_time(k, v) else v for k, v in body.items()}
        doc[section] = body
    return doc


def print_status(doc: dict[str, Any]) -> None:
    print(f"identity  {doc['identity']}")
    print(f"vault     {doc['vault']}")
    for section, body in doc.items():
        if not isinstance(body, dict):
            continue
        last_ok = body.get("last_ok")
        line = f"{section:8}  {body.get('state', '-')}  {body.get('target', '')}"
        endpoints = body.get("endpoints") or []
        if len(endpoints) > 1:
            # the link moves between these (asrchannel.endpoints): say which of them it uses
            target = body.get("target")
            which = endpoints.index(target) + 1 if target in endpoints else "?"
            line += f" (endpoint {which} of {len(endpoints)})"
        line += f"  last success {iso(from_iso(last_ok)) if last_ok else 'never'}"
        if body.get("last_error"):
            line += f"  last error {body['last_error']}"
        if body.get("proxy"):
            line += f"  via {body['proxy']}"
        print(line)


def add_status_command(sub: Any, role: str, state_dir_of: Callable[[str], str]) -> None:
    def run(args: argparse.Namespace) -> int:
        doc = status_doc(state_dir_of(args.config))
        if args.output == "json":
            print(json.dumps(doc, indent=2, sort_keys=True))
        else:
            print_status(doc)
        return 0

    st = sub.add_parser("status", help=f"show the {role}'s identity and link states")
    st.add_argument("--config", required=True, help=f"the {role}'s TOML configuration file")
    st.add_argument("--output", "-o", choices=["table", "json"], default="table",
                    help="table for people (default) or json for scripts")
    st.add_argument("--json", dest="output", action="store_const", const="json", help="the same as --output json")
    st.set_defaults(fn=run)
