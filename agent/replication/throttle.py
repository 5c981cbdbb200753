"""Bandwidth throttling of a host's uploads: one limit in work hours, another outside them.

The seed's agent (like Azure Backup's agent on a Hyper-V host) lets an operator cap what
replication may send to the vault, with one rate during work hours and another for the
rest of the week. ``agent.toml`` sets it in a ``[throttle]`` table (:class:`ThrottleSettings`)::

    [throttle]
    work_hours_mb_s = 5          # MB/s (1 MB = 1,000,000 bytes); absent: no limit
    non_work_hours_mb_s = 40     # absent: no limit
    work_days = ["mon", "tue", "wed", "thu", "fri"]   # the default
    work_start = "08:00"         # the default; HH:MM, local to ``timezone``
    work_end = "18:00"           # the default; after work_start ("24:00" is midnight)
    timezone = "UTC"             # the default; an IANA name, e.g. "Europe/Berlin"

One :class:`Throttle` per agent process, made by the composition root and shared by every
VM's cycles: each ``PutChunks`` message takes its size from it before it is handed to gRPC,
so the host's total upload stays within the limit whatever the number of VMs replicating at
once. Only the chunk data is counted: ``Missing``, ``CommitPoint`` and heartbeats are small,
and failback downloads are not uploads.

Which limit applies is decided by the injectable clock (``asrclock``) at every take, so a
test moves a host into non-work hours by moving its clock; how long to wait is measured on
the clock's monotonic time. The bucket holds at most ``BURST_SECONDS`` of the current rate,
so an idle host does not send a long burst when it resumes. Waiters are served in the order
they asked (each reserves its bytes, then waits until the bucket has refilled past its
reservation) and re-read the rate at least every ``MAX_WAIT_S``, so a schedule change takes
effect within that even for a thread that is waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, tzinfo
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator
from pydantic_core import PydanticKnownError

from asrclock import Clock
from asrerrors import AsrError
from asrops.configfile import Kind, Table, refuse

log = logging.getLogger(__name__)

MB = 1_000_000
# The slowest limit allowed: a PutChunks call carries up to 64 MiB and must end within its
# one-hour deadline (cycle.SEGMENT_BYTES at 0.1 MB/s is 11 minutes).
MIN_MB_S = 0.1
BURST_SECONDS = 0.5
MAX_WAIT_S = 0.5
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class BandwidthSchedule:
    """Upload limits in bytes per second (None: no limit) for work hours and the rest."""

    work_rate: float | None
    non_work_rate: float | None
    work_days: frozenset[int] = frozenset(range(5))      # Monday is 0
    work_start: time = time(8, 0)
    work_end: time | None = time(18, 0)                  # None: midnight at the end of the day
    zone: tzinfo = UTC

    def at(self, t: float) -> tuple[str, float | None]:
        """("work hours" or "non-work hours", the limit) at epoch seconds ``t``."""
        local = datetime.fromtimestamp(t, self.zone)
        now = local.time().replace(tzinfo=None)
        working = (local.weekday() in self.work_days and now >= self.work_start
                   and (self.work_end is None or now < self.work_end))
        return ("work hours", self.work_rate) if working else ("non-work hours", self.non_work_rate)


def _clock_time(value: Any, end: bool = False) -> time | None:
    """A time of day written "HH:MM"; for an end also "24:00", midnight at the end of the day (None)."""
    if not isinstance(value, str):
        raise PydanticKnownError("string_type")
    if len(value) == 5 and value[2] == ":" and value.replace(":", "", 1).isdigit():
        hh, mm = int(value[:2]), int(value[3:])
        if end and (hh, mm) == (24, 0):
            return None
        if hh < 24 and mm < 60:
            return time(hh, mm)
    raise refuse()


def _end_time(value: Any) -> time | None:
    return _clock_time(value, end=True)


def _zone(name: str) -> str:
    try:
        # UTC needs no time zone database (Windows has none unless tzdata is installed)
        if name != "UTC":
            ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise refuse('is not a time zone this host knows: it must be an IANA name such as "UTC" or '
                     '"Europe/Berlin" (if the name is right, install the time zone database: Debian tzdata)') from exc
    return name


def _days(days: list[str]) -> list[str]:
    lowered = [d.lower() for d in days]
    if any(d not in DAYS for d in lowered) or len(set(lowered)) != len(lowered):
        raise refuse()
    return lowered


Rate = Annotated[float | None, Field(ge=MIN_MB_S, allow_inf_nan=False),
                 Kind(f"MB/s >= {MIN_MB_S}", f"a number of MB/s of at least {MIN_MB_S} (1 MB = 1,000,000 bytes), "
                                             "or leave it out for no limit")]
DAYS_WORDS = f"an array naming each day once, from {', '.join(DAYS)}"


class ThrottleSettings(Table):
    """The ``[throttle]`` table of agent.toml (see the module's docstring)."""

    work_hours_mb_s: Rate = Field(None, description="the host's upload limit in work hours; none: no limit")
    non_work_hours_mb_s: Rate = Field(None, description="the host's upload limit outside work hours; none: no limit")
    work_days: Annotated[list[str], AfterValidator(_days), Kind("array of day names", DAYS_WORDS)] = Field(
        default_factory=lambda: list(DAYS[:5]), description="the days with work hours")
    # the times are given as strings and checked as the defaults too (validate_default), so
    # that work_end is compared with a work_start of the file even when it is left out
    work_start: Annotated[time, BeforeValidator(_clock_time),
                          Kind('"HH:MM"', 'a time of day "HH:MM" (00:00 to 23:59)')] = Field(
        "08:00", validate_default=True, description="when work hours start, in `timezone`")
    work_end: Annotated[time | None, BeforeValidator(_end_time),
                        Kind('"HH:MM"', 'a time of day "HH:MM" (00:00 to 23:59, or "24:00" for midnight)')] = Field(
        "18:00", validate_default=True, description='when work hours end, after `work_start` ("24:00": midnight)')
    timezone: Annotated[str, AfterValidator(_zone), Kind("IANA time zone", 'an IANA time zone name such as "UTC" or '
                                                                          '"Europe/Berlin"')] = Field(
        "UTC", description="the time zone of the work hours")

    @field_validator("work_end")
    @classmethod
    def _after_start(cls, end: time | None, info: ValidationInfo) -> time | None:
        start = info.data.get("work_start")    # absent when work_start itself was refused
        if end is not None and start is not None and end <= start:
            raise refuse(f"must be after work_start ({start:%H:%M}); work hours cannot span midnight")
        return end

    def schedule(self) -> BandwidthSchedule | None:
        """The schedule these settings make; None when they limit nothing."""
        if self.work_hours_mb_s is None and self.non_work_hours_mb_s is None:
            return None
        return BandwidthSchedule(
            self.work_hours_mb_s * MB if self.work_hours_mb_s is not None else None,
            self.non_work_hours_mb_s * MB if self.non_work_hours_mb_s is not None else None,
            frozenset(DAYS.index(d) for d in self.work_days), self.work_start, self.work_end,
            UTC if self.timezone == "UTC" else ZoneInfo(self.timezone))


class Throttle:
    """The host's token bucket. ``take(n)`` returns once ``n`` more bytes may be sent."""

    def __init__(self, schedule: BandwidthSchedule, clock: Clock,
                 sleep: Callable[[float], object] | None = None) -> None:
        self.schedule = schedule
        self.clock = clock
        self._stop = threading.Event()
        # tests of this module pass a sleep that moves a fake clock; the agent waits on _stop
        self._sleep = sleep or self._stop.wait
        self._lock = threading.Lock()
        self._issued = 0.0       # bytes reserved since the limit last changed
        self._credited = 0.0     # bytes the bucket has allowed since then
        self._account = 0        # counts those changes: a waiter from an older account reserves again
        self._last = clock.monotonic()
        self._period = ""
        self._rate: float | None = None

    def _current(self) -> float | None:
        """The limit now (bytes/s); a change of period or rate is logged and starts a fresh
        account, so a waiter's reservation is not judged by the old rate's history."""
        period, rate = self.schedule.at(self.clock.now())
        if period != self._period or rate != self._rate:
            log.info("upload limit", extra={"fields": {
                "period": period, "mb_s": rate / MB if rate else "unlimited"}})
            self._period, self._rate = period, rate
            self._issued = self._credited = 0.0
            self._last = self.clock.monotonic()
            self._account += 1
        return rate

    def _refill(self, rate: float) -> None:
        now = self.clock.monotonic()
        gained = max(0.0, now - self._last) * rate
        self._last = now
        # an idle host banks at most BURST_SECONDS of the rate
        self._credited = min(self._credited + gained, max(self._credited, self._issued + rate * BURST_SECONDS))

    def take(self, n: int) -> None:
        with self._lock:
            rate = self._current()
            if rate is None:
                return
            self._refill(rate)
            self._issued += n
            mine, account = self._issued, self._account
        while True:
            if self._stop.is_set():
                # the cycle ends here (its snapshot is merged back); the next start resumes it
                raise AsrError("the agent is stopping: the upload stopped while it waited for bandwidth",
                               action="None: the next cycle resumes the upload.")
            with self._lock:
                rate = self._current()
                if rate is None:
                    return
                if account != self._account:   # a new limit started a new account: reserve in it
                    self._issued += n
                    mine, account = self._issued, self._account
                self._refill(rate)
                wait = (mine - self._credited) / rate
                if wait <= 1e-6:   # a clock of epoch seconds cannot resolve less
                    return
            self._sleep(min(wait, MAX_WAIT_S))

    def close(self) -> None:
        """Wake every waiter: their cycles end with an error (the agent is stopping)."""
        self._stop.set()


def describe(schedule: BandwidthSchedule | None) -> dict[str, object]:
    """The schedule for logs and status output."""
    if schedule is None:
        return {"limit": "none"}
    end = schedule.work_end.strftime("%H:%M") if schedule.work_end else "24:00"
    return {
        "work_hours_mb_s": schedule.work_rate / MB if schedule.work_rate else "unlimited",
        "non_work_hours_mb_s": schedule.non_work_rate / MB if schedule.non_work_rate else "unlimited",
        "work_days": [DAYS[d] for d in sorted(schedule.work_days)],
        "work_hours": f"{schedule.work_start:%H:%M}-{end}",
        "timezone": str(schedule.zone),
    }


__all__ = ["BandwidthSchedule", "Throttle", "ThrottleSettings", "describe"]
