"""Reading a daemon's TOML configuration file, with every value's type checked.

Whatever is wrong with the file (missing, a directory, unreadable, not UTF-8, not TOML, an
unknown key, a value of the wrong type or out of range), the caller gets one
:class:`asrerrors.InvalidConfig` (ASR-0014, exit 14) that names the file, the key, the value
found and what is allowed; never a traceback. Used by the agent's and the provider's
configuration modules::

    raw = read_toml(path)
    top = Table(path, raw)
    top.check_keys({"state_dir", "heartbeat_seconds"})
    state_dir = top.path("state_dir")
    heartbeat = top.seconds("heartbeat_seconds", 30.0)
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable
from typing import Any

from asrchannel.proxy import ProxyUrl, parse_proxy
from asrerrors import InvalidConfig


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


def show(value: Any) -> str:
    """A value as TOML would spell it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str | int | float):
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value[:5]) + (", ..." if len(value) > 5 else "") + "]"
    return str(value)


def _kind(value: Any) -> str:
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
    return f"a {type(value).__name__}"


class Table:
    """One TOML table of a configuration file; ``where`` names it in messages ("clouds[0].")."""

    def __init__(self, file: str, raw: dict[str, Any], where: str = "") -> None:
        self.file = file
        self.raw = raw
        self.where = where

    def fail(self, key: str, value: Any, allowed: str) -> InvalidConfig:
        return InvalidConfig(
            f"{self.file}: {self.where}{key} = {show(value)} is not allowed: {allowed}",
            action=f"Correct {self.where}{key} in {self.file} and start again.")

    def check_keys(self, known: Iterable[str]) -> None:
        known = set(known)
        unknown = sorted(set(self.raw) - known)
        if unknown:
            names = ", ".join(f"{self.where}{k}" for k in unknown)
            raise InvalidConfig(
                f"{self.file}: unknown key{'s' if len(unknown) > 1 else ''} {names}; "
                f"the keys allowed{' in ' + self.where.rstrip('.') if self.where else ''} are "
                f"{', '.join(sorted(known))}",
                action=f"Remove or correct the key in {self.file} (a misspelt key would be ignored otherwise).")

    def string(self, key: str, default: str | None = None, required: bool = False,
               allowed: str = "a non-empty string") -> str | None:
        if key not in self.raw:
            if required:
                raise InvalidConfig(f"{self.file}: {self.where}{key} is required ({allowed})",
                                    action=f"Add {self.where}{key} to {self.file}.")
            return default
        value = self.raw[key]
        if not isinstance(value, str):
            raise self.fail(key, value, f"it is {_kind(value)}; {self.where}{key} must be {allowed}")
        if not value:
            raise self.fail(key, value, f"{self.where}{key} must be {allowed}")
        return value

    def required(self, key: str, allowed: str = "a non-empty string") -> str:
        value = self.string(key, required=True, allowed=allowed)
        assert value is not None  # string() raised otherwise
        return value

    def path(self, key: str) -> str:
        """A required path (relative ones are the caller's to resolve)."""
        return self.required(key, "a non-empty path (a string)")

    def proxy(self, key: str = "proxy") -> ProxyUrl | None:
        """An HTTP CONNECT proxy URL; absent or "" is no proxy. A string that is not a proxy
        URL is InvalidProxy (ASR-0013), never a silent direct connection."""
        if self.raw.get(key) == "":
            return None
        value = self.string(key, allowed="an http://[user:password@]host:port URL (a string)")
        return parse_proxy(value) if value else None

    def address(self, key: str, default: str, example: str) -> str:
        """A "HOST:PORT" to listen on, port 1 to 65535; absent or "" is ``default``."""
        if self.raw.get(key, "") == "":
            return default
        allowed = f'a "HOST:PORT" string with a port from 1 to 65535, e.g. "{example}"'
        value = self.string(key, allowed=allowed)
        assert value is not None  # present and not empty
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise self.fail(key, value, f"{self.where}{key} must be {allowed}")
        return value

    def seconds(self, key: str, default: float) -> float:
        """A number of seconds: an integer or float, finite and greater than 0."""
        if key not in self.raw:
            return default
        value = self.raw[key]
        allowed = "a number of seconds greater than 0 (e.g. 30 or 0.5)"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, value, f"it is {_kind(value)}; {self.where}{key} must be {allowed}")
        if not math.isfinite(value) or value <= 0:
            raise self.fail(key, value, f"{self.where}{key} must be {allowed}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.raw:
            return default
        value = self.raw[key]
        if not isinstance(value, bool):
            raise self.fail(key, value, f"it is {_kind(value)}; {self.where}{key} must be true or false "
                                        "(without quotes)")
        return value

    def strings(self, key: str, default: list[str] | None = None, what: str = "strings") -> list[str]:
        if key not in self.raw:
            return list(default or [])
        value = self.raw[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, value, f"{self.where}{key} must be an array of {what}, "
                                        'e.g. ["a", "b"]')
        return list(value)

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[key]]``)."""
        if key not in self.raw:
            return []
        value = self.raw[key]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, value, f"{self.where}{key} must be an array of tables, written [[{key}]]")
        return [Table(self.file, v, f"{self.where}{key}[{i}].") for i, v in enumerate(value)]


__all__ = ["Table", "read_toml", "show"]
