"""The JSON Schemas of ``asr --output json`` (``asrcli/schemas/``) as a test helper:
:func:`check` validates a command's document against its command's schema with jsonschema
(Draft 2020-12, references resolved among the schema files only, never fetched)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from asrcli.local_cmds import schema_name
from asrcli.main import parser

SCHEMAS = Path(__file__).resolve().parent.parent / "asrcli" / "schemas"


@cache
def registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.json")):
        doc = json.loads(path.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


def validator(name: str) -> Draft202012Validator:
    doc = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(doc)
    return Draft202012Validator(doc, registry=registry(), format_checker=FormatChecker())


def command_of(args: Sequence[str]) -> str:
    """The command ``asr ARGS`` runs, e.g. "point list" (the name its schema file is made of)."""
    ns, _ = parser().parse_known_args(list(args))
    return str(ns.command)


def check(command: str, doc: Any) -> Any:
    """Raise jsonschema.ValidationError unless ``doc`` is what ``command`` may print; return it."""
    validator(schema_name(command)).validate(doc)
    return doc


def check_error(doc: Any) -> Any:
    validator("error.json").validate(doc)
    return doc
