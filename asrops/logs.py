"""The daemons' logs: one record per line on stderr, for people and for journald alike.

Environment (read once, by :func:`setup`)::

    ASR_LOG_LEVEL   debug | info (default) | warning | error | critical
                    anything else is InvalidConfig (ASR-0014), never a traceback
    ASR_LOG_FORMAT  text | json; default text when stderr is a terminal, json otherwise

``text`` is for people: ``2026-11-30T10:00:00.123Z info  asr-agent: point committed vm=web01
bytes_sent=1048576``. ``json`` is one object per line (``ts``, ``level``, ``logger``, ``msg``,
then the record's fields, ``exc`` for a traceback) for log shippers and ``jq``.

**Priority for journald.** When stderr is the journal's stream (systemd sets
``JOURNAL_STREAM`` to that stream's ``device:inode``; a redirected stderr does not match, so
a child writing to a file gets no prefixes), every line starts with its syslog priority
``<N>`` (sd-daemon(3): debug 7, info 6, warning 4, error 3, critical 2). journald strips the
prefix and files the line under that priority, so ``journalctl -p warning -u asr-agent``
shows warnings and worse. The native journal protocol would need ``systemd-python``, which
builds against ``libsystemd-dev``; the prefix gives the same priority without it. Under the
journal the text format leaves the timestamp out: the journal stamps every line itself.

**Quiet libraries.** At info and above, apscheduler (a "Running job" and an "executed
successfully" line for every replication cycle: 190 of 216 agent lines in one measure) and
the Azure SDK (a line per HTTP request) log only warnings; ``debug`` shows them again.

**Redaction**, a last line of defence (the code does not log secrets; a test runs the whole
story and greps every line): a PEM private key block and the password of a URL
(``scheme://user:password@host``) are replaced by ``[REDACTED]`` in every formatted line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from asrerrors import InvalidConfig

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}
FORMATS = ("text", "json")
# syslog priorities (sd-daemon(3) SD_DEBUG .. SD_CRIT) by logging level
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
# loggers that say too much at info: quiet unless the level is debug
QUIET_AT_INFO = ("apscheduler", "azure")
REDACTED = "[REDACTED]"
_PEM_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|$)", re.DOTALL)
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@\"']+:)[^@\s/\"']+@")


def redact(line: str) -> str:
    """``line`` without PEM private keys and URL passwords."""
    if "PRIVATE KEY-----" in line:
        line = _PEM_KEY.sub(REDACTED, line)
    if "@" in line:
        line = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", line)
    return line


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between two named ones round up)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def _ts(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    extra = getattr(record, "fields", None)
    return dict(extra) if isinstance(extra, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": _ts(record), "level": record.levelname.lower(), "logger": record.name,
                               "msg": record.getMessage()}
        doc.update(_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def _text_value(value: Any) -> str:
    """A field's value in a text line: a string bare, or quoted when it has spaces, quotes or
    newlines; anything else as compact JSON."""
    if not isinstance(value, str):
        return json.dumps(value, default=str, separators=(",", ":"))
    if value == "" or any(c in value for c in ' "=\n'):
        return json.dumps(value)
    return value


class TextFormatter(logging.Formatter):
    """``TIME LEVEL logger: message key=value ...``; a traceback follows on its own lines."""

    def __init__(self, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        head = f"{_ts(record)} " if self.timestamps else ""
        line = f"{head}{record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LineFormatter(logging.Formatter):
    """Wraps a formatter: redacts, and prefixes each line with ``<N>`` for the journal."""

    def __init__(self, inner: logging.Formatter, journal: bool) -> None:
        super().__init__()
        self.inner = inner
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = redact(self.inner.format(record))
        if not self.journal:
            return text
        prefix = f"<{priority(record.levelno)}>"
        # journald reads every line on its own: a traceback's lines keep the record's priority
        return "\n".join(prefix + line for line in text.split("\n"))


def stream_is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``JOURNAL_STREAM``)."""
    want = environ.get("JOURNAL_STREAM", "")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, AttributeError):
        return False


def choose(environ: Mapping[str, str], stream: TextIO) -> tuple[int, str]:
    """(level, format) from the environment; InvalidConfig for a value not documented."""
    raw_level = environ.get("ASR_LOG_LEVEL", "").strip()
    level = LEVELS.get(raw_level.lower() or "info")
    if level is None:
        raise InvalidConfig(
            f"ASR_LOG_LEVEL={raw_level} is not a log level; the levels are {', '.join(LEVELS)}",
            action="Set ASR_LOG_LEVEL to one of the levels (info when unset), or unset it.")
    raw_format = environ.get("ASR_LOG_FORMAT", "").strip()
    fmt = raw_format.lower() or ("text" if _isatty(stream) else "json")
    if fmt not in FORMATS:
        raise InvalidConfig(
            f"ASR_LOG_FORMAT={raw_format} is not a log format; the formats are text and json",
            action="Set ASR_LOG_FORMAT to text or json, or unset it (text on a terminal, json otherwise).")
    return level, fmt


def setup(component: str, stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> logging.Logger:
    """Configure the root logger of a daemon (or tool) once, at start; the logger of
    ``component``. Raises InvalidConfig (ASR-0014) for a bad ASR_LOG_LEVEL or ASR_LOG_FORMAT."""
    stream = stream if stream is not None else sys.stderr
    environ = environ if environ is not None else os.environ
    level, fmt = choose(environ, stream)
    journal = stream_is_journal(stream, environ)
    inner: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter(timestamps=not journal)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter(inner, journal))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_AT_INFO:
        logging.getLogger(name).setLevel(logging.NOTSET if level <= logging.DEBUG else max(level, logging.WARNING))
    return logging.getLogger(component)


__all__ = ["FORMATS", "LEVELS", "JsonFormatter", "TextFormatter", "choose", "priority", "redact", "setup",
           "stream_is_journal"]
