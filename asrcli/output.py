"""Printing results: JSON for scripts (--json), aligned tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from asrclock import iso


def to_doc(msg: Message) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def emit_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], times: Sequence[str] = ()) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[_cell(r.get(c, ""), c in times) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any, is_time: bool) -> str:
    if is_time:
        return iso(float(value or 0)) or "-"
    if isinstance(value, list):
        return ",".join(str(v) if not isinstance(v, dict) else "/".join(map(str, v.values())) for v in value)
    return str(value)


def show(doc: dict[str, Any], times: Sequence[str] = ()) -> None:
    width = max((len(k) for k in doc), default=0)
    for k, v in doc.items():
        print(f"{k.ljust(width)}  {_cell(v, k in times)}")
