"""Printing results: JSON for scripts (``--output json`` or ``--json``), aligned tables for people.

The JSON form of a wire message (:func:`to_doc`) follows three rules, the same for every
command, each checked by the command's JSON Schema (``asrcli/schemas/``):

- every field is present (empty strings, zeros and empty lists included);
- integers are JSON numbers, 64-bit ones too (protobuf's own JSON mapping writes int64 as
  strings, which scripts then have to convert);
- times are RFC 3339 UTC strings with microseconds, ``"2026-11-30T09:15:02.123456Z"``, or
  null for "never" (see :func:`asrclock.iso_json`). A field is a time when it is a ``double``
  named ``at``, ``*_at`` or ``last_*`` (seconds since the epoch on the wire); a test keeps
  every such field of the wire to that rule.

Tables show times to the second and sizes in binary units (KiB, MiB, GiB).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from asrclock import iso_json

_INTS = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
         FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
         FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32,
         FieldDescriptor.TYPE_SFIXED64}
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}

Printer = Callable[[Any], None]


def is_time_name(name: str) -> bool:
    return name == "at" or name.endswith("_at") or name.startswith("last_")


def is_time_field(field: Any) -> bool:
    """A ``double`` that holds seconds since the epoch (see the module doc)."""
    return field.type == FieldDescriptor.TYPE_DOUBLE and is_time_name(field.name)


def to_doc(msg: Message) -> dict[str, Any]:
    """The JSON document of a wire message (see the module doc for the rules)."""
    doc: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.is_repeated:
            doc[field.name] = [_value(field, v) for v in value]
        else:
            doc[field.name] = _value(field, value)
    return doc


def _value(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_doc(value)
    if field.type in _INTS:
        return int(value)
    if field.type in _FLOATS:
        return iso_json(float(value)) if is_time_field(field) else float(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_number[int(value)].name
    return value


def emit_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


# ---- for people -------------------------------------------------------------------------------
def human_bytes(n: Any) -> str:
    """Binary units, three significant digits: 0 B, 512 B, 1.50 KiB, 40.0 GiB."""
    size = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(size)} B"
            return f"{size:.3g} {unit}" if size < 100 else f"{size:.0f} {unit}"
        size /= 1024
    return f"{size} TiB"  # unreachable: the loop returns at TiB


def percent(fraction: Any) -> str:
    return f"{float(fraction or 0) * 100:.0f}%"


def time_cell(value: Any) -> str:
    """A JSON time (RFC 3339 with microseconds) shown to the second; "-" for never."""
    if not value:
        return "-"
    text = str(value)
    return text[:19] + "Z" if len(text) > 19 else text


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], times: Sequence[str] = (),
          formats: dict[str, Callable[[Any], str]] | None = None) -> None:
    """Aligned columns; ``times`` are shown with :func:`time_cell`, ``formats`` map a column to
    its own formatter (e.g. :func:`human_bytes`)."""
    if not rows:
        print("(none)")
        return
    fmt = dict(formats or {})
    for t in times:
        fmt.setdefault(t, time_cell)
    cells = [[fmt[c](r.get(c, "")) if c in fmt else _cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) if not isinstance(v, dict) else "/".join(map(str, v.values())) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    return str(value)


def show(doc: dict[str, Any], times: Sequence[str] = ()) -> None:
    width = max((len(k) for k in doc), default=0)
    for k, v in doc.items():
        print(f"{k.ljust(width)}  {time_cell(v) if k in times else _cell(v)}")


def render(doc: Any, printer: Printer, as_json: bool) -> None:
    if as_json:
        emit_json(doc)
    else:
        printer(doc)
