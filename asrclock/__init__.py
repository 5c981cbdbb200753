"""The injectable clock.

Everything that reads the time for schedules, retention, expiry, heartbeats or billing takes a
:class:`Clock`. Production code uses :class:`SystemClock`; tests use :class:`FakeClock` and
move time forward explicitly instead of sleeping. A daemon can be started on a fake clock
with the ``ASR_FAKE_CLOCK_FILE`` environment variable, a test hook honoured only with
``ASR_TEST_MODE=1`` (``asrops.environment``): the file holds an epoch in seconds that the test
rewrites to move time.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol

from asrops.environment import test_hook


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self._t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def monotonic(self) -> float:
        return self.now()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._t += seconds

    def set(self, t: float) -> None:
        with self._lock:
            self._t = t


class FileClock:
    """Test clock shared between processes: the time is read from a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def now(self) -> float:
        with open(self.path) as f:
            return float(f.read().strip())

    def monotonic(self) -> float:
        return time.monotonic()


def from_environment() -> Clock:
    """The system clock, or in test mode the file clock ``ASR_FAKE_CLOCK_FILE`` names."""
    path = test_hook("ASR_FAKE_CLOCK_FILE")
    if path:
        return FileClock(path)
    return SystemClock()


def iso(t: float) -> str:
    """RFC 3339 UTC timestamp with seconds, as every output of ours prints times."""
    if not t:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_json(t: float) -> str | None:
    """A time as every ``--json`` output of ours writes it: RFC 3339 UTC with microseconds
    (fixed width, so the strings sort in time order, and exact to the float we hold), or
    None for "never" (0)."""
    if not t:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(text: str) -> float:
    """Seconds since the epoch of an ISO-8601 time; without a zone it is UTC. ValueError if
    it is not one."""
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
