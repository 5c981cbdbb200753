"""`status --config FILE` of the provider and the agent: identity and link states."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from registration.state import load, read_status


def add_status_command(sub: Any, role: str, state_dir_of: Callable[[str], str]) -> None:
    def run(args: argparse.Namespace) -> int:
        state_dir = state_dir_of(args.config)
        ident = load(state_dir)
        print(json.dumps({"identity": ident.identity, "vault": ident.vault_name, **read_status(state_dir)}, indent=2))
        return 0

    st = sub.add_parser("status", help=f"show the {role}'s identity and link states (JSON)")
    st.add_argument("--config", required=True)
    st.set_defaults(fn=run)
