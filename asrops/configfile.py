"""The daemons' TOML configuration files: read ours, checked by pydantic models.

Each file is one pydantic model (``agent.config.AgentConfig``, ``provider.config.ProviderConfig``,
``cloudsvc.config.CloudConfig``), strict (a string is never read as a number or a boolean) and
closed (``extra="forbid"``: an unknown key is refused at every depth, so a misspelt key is not
silently ignored). Every key carries a :class:`Kind` (its type in plain words) and a
description; the defaults table of docs/operations.md is generated from them
(:func:`defaults_table`), so the documentation cannot drift from the models.

Reading the file stays ours (:func:`read_toml`): missing, a directory, unreadable, not UTF-8 or
not TOML is one :class:`asrerrors.InvalidConfig` saying so. Whatever the model refuses becomes
ONE InvalidConfig (ASR-0014, exit 14) whose message names the file and whose details hold one
line per offending key: its dotted path (``clouds[0].sync``, ``throttle.work_start``), the
value found and what is allowed, in our words rather than pydantic's. One exception keeps a
published exit code: when the only problem is a malformed proxy URL, the error is
:class:`asrerrors.InvalidProxy` (ASR-0013), as it is for ``--proxy`` on the command line.

Validators in the models raise :func:`refuse` (our own error type) with the reason, which is
written after the key: ``refuse("must be after work_start (08:00)")``; with no reason the
key's :class:`Kind` says what is allowed.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import typing
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError, PydanticKnownError

from asrchannel.proxy import ProxyUrl, parse_proxy
from asrerrors import AsrError, InvalidConfig, InvalidProxy

# Our validators' error types: REFUSED carries its reason in ctx; BAD_PROXY too, and marks
# the error that keeps ASR-0013.
REFUSED = "asr_refused"
BAD_PROXY = "asr_bad_proxy"


@dataclass(frozen=True)
class Kind:
    """What a key accepts: ``short`` for the type column of the defaults table, ``words`` for
    error messages ("... must be WORDS"). Attached to a field as Annotated metadata."""

    short: str
    words: str


def refuse(reason: str = "", *, error: str = REFUSED) -> PydanticCustomError:
    """An error for a validator to raise; ``reason`` follows the key's name in the message
    (empty: "must be" and the key's :class:`Kind`)."""
    # the reason goes through ctx, not the template: a value quoted in it may hold braces
    return PydanticCustomError(error, "{reason}", {"reason": reason})


class Table(BaseModel):
    """A table of a configuration file: strict (a string is never read as a number or a
    boolean) and closed (an unknown key is refused)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ConfigFile(Table):
    """A whole configuration file; :func:`load` records where it was read from."""

    _path: str = PrivateAttr("")

    @property
    def path(self) -> str:
        """The absolute path of the file this was read from ("" when made in code)."""
        return self._path


F = TypeVar("F", bound=ConfigFile)


# ---------------------------------------------------------------------------------------------
# Types shared by the three files

def _relative_to_file(value: str, info: ValidationInfo) -> str:
    """A relative path is relative to the configuration file's directory (the loader passes
    it as ``base`` in the validation context), not to wherever the daemon was started."""
    base = (info.context or {}).get("base")
    return os.path.join(base, value) if base else value


def _optional_relative_to_file(value: str, info: ValidationInfo) -> str:
    return _relative_to_file(value, info) if value else value


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise refuse()
    return value


def _address_or_off(value: str) -> str:
    return value if value == "" else _address(value)


def _proxy(value: Any) -> ProxyUrl | None:
    if not isinstance(value, str):
        raise PydanticKnownError("string_type")
    if value == "":
        return None
    try:
        return parse_proxy(value)
    except InvalidProxy as exc:
        # parse_proxy says "proxy URL ...'HOST:PORT' must ..."; the value is shown (without
        # its password) before the reason already
        reason = exc.message.split("' ", 1)[1] if exc.message.startswith("proxy URL ...") else exc.message
        raise refuse(reason, error=BAD_PROXY) from exc


ConfigPath = Annotated[str, Field(min_length=1), AfterValidator(_relative_to_file),
                 Kind("path", "a non-empty path (a string; relative to the file's directory)")]
OptionalPath = Annotated[str, AfterValidator(_optional_relative_to_file),
                         Kind('path or ""', 'a path (a string; relative to the file\'s directory), or "" for the '
                                            'default')]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False),
                    Kind("seconds > 0", "a number of seconds greater than 0 (e.g. 30 or 0.5)")]
Address = Annotated[str, AfterValidator(_address),
                    Kind('"HOST:PORT"', 'a "HOST:PORT" string with a port from 1 to 65535, e.g. "0.0.0.0:7500"')]
MetricsAddress = Annotated[str, AfterValidator(_address_or_off),
                           Kind('"HOST:PORT" or ""', 'a "HOST:PORT" string with a port from 1 to 65535, '
                                                     'e.g. "127.0.0.1:9464", or "" for none')]
AddressOrOff = Annotated[str, AfterValidator(_address_or_off),
                         Kind('"HOST:PORT" or ""', 'a "HOST:PORT" string with a port from 1 to 65535, '
                                                   'e.g. "10.0.0.11:7600", or "" for none')]
PROXY_KIND = Kind("proxy URL", 'an http://[user:password@]host:port URL (a string), or "" for none')
Proxy = Annotated[ProxyUrl | None, PlainValidator(_proxy), PROXY_KIND]
NonEmpty = Annotated[str, Field(min_length=1)]


def _database_url(value: str) -> str:
    if value and not value.startswith(("postgresql://", "postgres://")):
        raise refuse('must be a postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE URL, or "" for SQLite')
    return value


DATABASE_URL_KIND = Kind('postgresql:// URL or ""', 'a postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE URL (a '
                                                    'string), or "" for the embedded SQLite file')
DatabaseUrl = Annotated[str, AfterValidator(_database_url), DATABASE_URL_KIND]
# kinds whose values may hold a password: an error shows them from the "@" on
SECRET_KINDS = (PROXY_KIND, DATABASE_URL_KIND)


# ---------------------------------------------------------------------------------------------
# Reading

def read_toml(path: str) -> dict[str, Any]:
    """The parsed file at ``path`` (absolute), or InvalidConfig saying why it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise InvalidConfig(f"configuration file {path} does not exist",
                            action="Pass the path of the daemon's TOML configuration file with --config.") from exc
    except IsADirectoryError as exc:
        raise InvalidConfig(f"configuration file {path} is a directory, not a file",
                            action="Pass the path of the TOML file itself with --config.") from exc
    except OSError as exc:
        raise InvalidConfig(f"configuration file {path} cannot be read: {exc.strerror}",
                            action="Check the file's permissions and the path given with --config.") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidConfig(f"configuration file {path} is not UTF-8 text (byte {exc.start} is "
                            f"0x{data[exc.start]:02x}); TOML files are UTF-8",
                            action="Save the file as UTF-8 (it may be a binary file given by mistake).") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"configuration file {path} is not valid TOML: {exc}") from exc


def load(path: str, model: type[F]) -> F:
    """The file at ``path`` checked against ``model``; relative paths in it are resolved
    against the file's directory."""
    path = os.path.abspath(path)
    raw = read_toml(path)
    try:
        config = model.model_validate(raw, context={"base": os.path.dirname(path)})
    except ValidationError as exc:
        raise invalid(path, model, exc.errors(include_url=False)) from exc
    config._path = path
    return config


# ---------------------------------------------------------------------------------------------
# Errors in our words

def show(value: Any) -> str:
    """A value as TOML would spell it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str | int | float):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value[:5]) + (", ..." if len(value) > 5 else "") + "]"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def kind_of_value(value: Any) -> str:
    """What TOML type a value is, for "it is ..."."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime):
        return "a TOML date-time, not a string"
    if isinstance(value, date):
        return "a TOML date, not a string"
    if isinstance(value, time):
        return "a TOML time, not a string"
    return f"a {type(value).__name__}"


# pydantic's error types an operator can meet in these files, in plain words: used when a key
# has no Kind of its own (an item inside an array, a table's own type).
PLAIN: dict[str, str] = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false (without quotes)",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "greater_than": "greater than {gt}",
    "greater_than_equal": "at least {ge}",
    "less_than": "less than {lt}",
    "less_than_equal": "at most {le}",
    "finite_number": "a finite number",
    "string_too_short": "a non-empty string",
    "too_short": "an array of at least {min_length} items",
    "too_long": "an array of at most {max_length} items",
    "literal_error": "one of {expected}",
}
# these say the value has the wrong TOML type: the message says which type it has
TYPE_ERRORS = {"string_type", "int_type", "float_type", "bool_type", "list_type", "dict_type", "model_type",
               "model_attributes_type", "dataclass_type", "time_type", "date_type", "datetime_type"}


def _number(value: Any) -> Any:
    """10.0 -> 10: a bound as the operator would write it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _plain_type(annotation: Any) -> str:
    """A required key's type in plain words, when it has no Kind."""
    if typing.get_origin(annotation) is list:
        return "an array"
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false (without quotes)"}
    for t in _unwrap(annotation):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return "a table"
        if t in names:
            return names[t]
    return "a valid value"


def dotted(loc: tuple[str | int, ...]) -> str:
    """("clouds", 0, "sync") -> "clouds[0].sync"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(annotation: Any) -> list[Any]:
    """The types inside an annotation: X | None, list[X], Annotated[X, ...]."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Annotated:
        return _unwrap(args[0])
    if not args:
        return [annotation]
    return [t for a in args for t in _unwrap(a)]


def table_model(info: FieldInfo) -> type[BaseModel] | None:
    """The model of a table (``[throttle]``) or array of tables (``[[clouds]]``) key."""
    for t in _unwrap(info.annotation):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def kind(info: FieldInfo) -> Kind | None:
    """The field's Kind: pydantic keeps the metadata of a field's outer Annotated in
    ``metadata``; one inside ``X | None`` stays in the annotation."""
    for m in info.metadata:
        if isinstance(m, Kind):
            return m
    return _kind_in(info.annotation)


def _kind_in(annotation: Any) -> Kind | None:
    if typing.get_origin(annotation) is Annotated:
        for m in typing.get_args(annotation)[1:]:
            if isinstance(m, Kind):
                return m
    for a in typing.get_args(annotation):
        found = _kind_in(a)
        if found:
            return found
    return None


def _field_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> tuple[FieldInfo | None, tuple[str | int, ...]]:
    """(the field that the last named part of ``loc`` is, that part's loc): for
    ("clouds", 0, "hosts", 1), CloudDef's hosts and ("clouds", 0, "hosts")."""
    current: type[BaseModel] | None = model
    info: FieldInfo | None = None
    field_loc: tuple[str | int, ...] = ()
    for i, part in enumerate(loc):
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return None, field_loc
        info, field_loc = current.model_fields[part], loc[:i + 1]
        current = table_model(info)
    return info, field_loc


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    if not loc:
        return model
    info, _ = _field_at(model, loc)
    return table_model(info) if info is not None else None


def describe_error(model: type[BaseModel], err: ErrorDetails) -> str:
    """One offending key, in our words: the key, the value found, what is allowed."""
    loc = tuple(err["loc"])
    key, typ, ctx = dotted(loc), err["type"], err.get("ctx") or {}
    if typ == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        where = dotted(loc[:-1])
        allowed = ", ".join(sorted(parent.model_fields)) if parent else "?"
        return f"unknown key {key}; the keys allowed{' in ' + where if where else ''} are {allowed}"
    info, field_loc = _field_at(model, loc)
    k = kind(info) if info is not None and len(field_loc) == len(loc) else None
    if k is None and info is not None and typ in TYPE_ERRORS | {"too_short", "string_too_short", REFUSED} \
            and len(field_loc) < len(loc):
        # an item of an array (hosts[1] = 5, endpoints[0] = "h"): the array's own Kind says
        # what its items are
        k = kind(info)
    if typ == "missing":
        words = k.words if k else _plain_type(info.annotation if info is not None else None)
        return f"{key} is required: it must be {words}"
    words = k.words if k else PLAIN.get(typ, "a valid value").format(**{n: _number(v) for n, v in ctx.items()})
    value = err["input"]
    if info is not None and kind(info) in SECRET_KINDS and isinstance(value, str) and "@" in value:
        value = "..." + value.rsplit("@", 1)[1]   # never the proxy's or the database's password
    field_key = dotted(field_loc) or key
    if typ in (REFUSED, BAD_PROXY):
        reason = ctx.get("reason") or f"must be {words}"
        return f"{key} = {show(value)} is not allowed: {field_key} {reason}"
    if typ in TYPE_ERRORS:
        return f"{key} = {show(value)} is not allowed: it is {kind_of_value(value)}; {field_key} must be {words}"
    return f"{key} = {show(value)} is not allowed: {field_key} must be {words}"


def invalid(path: str, model: type[BaseModel], errors: list[ErrorDetails]) -> AsrError:
    """The one error for everything ``model`` refused in the file at ``path``."""
    details = [describe_error(model, e) for e in errors]
    if errors and all(e["type"] == BAD_PROXY for e in errors):
        return InvalidProxy(f"configuration file {path}: the proxy URL is malformed", details=details,
                            action=f"Correct proxy in {path} (or remove it for a direct connection) and "
                                   "start again.")
    n = len(details)
    return InvalidConfig(f"configuration file {path} has {n} wrong setting{'s' if n > 1 else ''}",
                         details=details,
                         action=f"Correct {'each key' if n > 1 else 'the key'} listed in {path} and start again "
                                "(docs/operations.md, Configuration files, lists every key).")


# ---------------------------------------------------------------------------------------------
# Writing (the cloud service's init) and documenting

def to_toml(config: BaseModel) -> str:
    """``config``'s keys as TOML, in the model's order, such that reading it back gives an
    equal model. Only what the cloud service's file holds is supported: strings, numbers,
    booleans and arrays of strings."""
    lines = []
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, list):
            lines.append(f"{name} = [{', '.join(_toml_scalar(v) for v in value)}]")
        else:
            lines.append(f"{name} = {_toml_scalar(value)}")
    return "\n".join(lines) + "\n"


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # a JSON string is a TOML basic string (", \ and control characters escaped alike),
        # except that TOML also wants DEL escaped
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    raise TypeError(f"cannot write {value!r} as TOML")


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return show(value)


def defaults_table(files: list[tuple[str, type[BaseModel]]]) -> str:
    """The table of every key of every file (Markdown): file, key, type, default, meaning."""
    rows = ["| file | key | type | default | meaning |", "|---|---|---|---|---|"]

    def add(file: str, model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            k = kind(info)
            assert k is not None and info.description, f"{model.__name__}.{name} needs a Kind and a description"
            rows.append(f"| `{file}` | `{prefix}{name}` | {k.short} | {_default(info)} | {info.description} |")
            sub = table_model(info)
            if sub is not None:
                add(file, sub, f"{prefix}{name}{'[]' if k.short.startswith('array') else ''}.")

    for file, model in files:
        add(file, model, "")
    return "\n".join(rows) + "\n"


__all__ = ["PROXY_KIND", "Address", "ConfigFile", "ConfigPath", "Kind", "MetricsAddress", "NonEmpty", "Proxy",
           "Seconds", "Table", "defaults_table", "describe_error", "dotted", "invalid", "load", "read_toml",
           "refuse", "show", "to_toml"]
