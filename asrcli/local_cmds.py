"""Commands that need no cloud service: ``asr completion SHELL`` and ``asr schema [COMMAND]``.

Completion scripts are generated from the parser itself by shtab, so they never drift from
the commands; ``asr schema`` prints the JSON Schema a command's ``--output json`` follows
(the files in ``asrcli/schemas/``, which the test suite checks every answer against).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from asrerrors import NotFound

SHELLS = ("bash", "zsh", "tcsh")


def schema_name(command: str) -> str:
    """The schema file of a command: "point list" -> "point-list.json"."""
    return command.replace(" ", "-") + ".json"


def load_schema(name: str) -> dict[str, Any]:
    """A schema document by file name; NotFound naming the command when there is none."""
    path = resources.files("asrcli") / "schemas" / name
    if not path.is_file():
        raise NotFound(f"no JSON schema {name}", action="List them with 'asr schema'.")
    return dict(json.loads(path.read_text()))


def schema_names() -> list[str]:
    return sorted(p.name for p in (resources.files("asrcli") / "schemas").iterdir() if p.name.endswith(".json"))


def add_parsers(sub: Any, root_parser: Callable[[], argparse.ArgumentParser]) -> None:
    def completion(a: argparse.Namespace) -> Any:
        import shtab

        script = shtab.complete(root_parser(), shell=a.shell)
        return {"shell": a.shell, "script": script}, lambda d: print(d["script"], end="")

    def schema(a: argparse.Namespace) -> Any:
        if not a.name:
            names = [n.removesuffix(".json") for n in schema_names()]
            return names, lambda d: print("\n".join(d))
        doc = load_schema(schema_name(" ".join(a.name)))
        return doc, lambda d: print(json.dumps(d, indent=2))

    p = sub.add_parser("completion", help="print a shell completion script",
                       description="Print a completion script for SHELL. Bash: "
                                   "asr completion bash > /etc/bash_completion.d/asr (or source it from ~/.bashrc).")
    p.add_argument("shell", choices=SHELLS, help="the shell to complete for")
    p.set_defaults(fn=completion, local=True)
    p = sub.add_parser("schema", help="print the JSON Schema of a command's --output json",
                       description="Without COMMAND, list the commands that have one.")
    p.add_argument("name", nargs="*", metavar="COMMAND", help="e.g. point list")
    p.set_defaults(fn=schema, local=True)
