"""Which recovery points a replication policy keeps (a pure function of points and time).

The rule, following Azure Site Recovery's Hyper-V replication policy:

* The latest point is always kept: a protected VM must always have something to fail over to.
* First hour: every point of the last hour is kept, one per copy interval (if a resync or a
  retry produced several in one interval, the latest of that interval).
* Retention N >= 1 hours: within the last N hours one point per clock hour is kept, the latest
  of each hour. App-consistent points are kept at their own frequency within the same window:
  the latest app-consistent point of each ``app_consistent_hours`` period.
* Retention 0: ASR documents 0 hours as "keep only the latest recovery point", with no
  window at all, so neither the first-hour points nor app-consistent points are kept beyond
  the latest one. (A policy with app-consistent snapshots needs retention >= 1 to keep them;
  rejecting that combination is the policy layer's job, not this function's.)

Periods (copy interval, hour, app-consistent period) are aligned to the Unix epoch, so the
same point stays in the same bucket as time passes and applying the rule twice changes
nothing (it is idempotent).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

HOUR = 3600.0


class _Point(Protocol):
    @property
    def point_id(self) -> str: ...

    @property
    def created_at(self) -> float: ...

    @property
    def kind(self) -> str: ...


@dataclass(frozen=True)
class RetentionPolicy:
    copy_frequency_s: float = 300.0
    retention_hours: int = 24
    app_consistent_hours: int = 0  # 0: no app-consistent snapshots

    def __post_init__(self) -> None:
        if self.copy_frequency_s <= 0:
            raise ValueError("copy frequency must be positive")
        if not 0 <= self.retention_hours <= 24:
            raise ValueError("retention must be 0-24 hours")
        if not 0 <= self.app_consistent_hours <= 12:
            raise ValueError("app-consistent frequency must be 0-12 hours")


def _latest_per_bucket(points: Iterable[_Point], width: float) -> set[str]:
    best: dict[int, _Point] = {}
    for p in points:
        bucket = int(p.created_at // width)
        cur = best.get(bucket)
        if cur is None or (p.created_at, p.point_id) > (cur.created_at, cur.point_id):
            best[bucket] = p
    return {p.point_id for p in best.values()}


def points_to_keep(points: Iterable[_Point], policy: RetentionPolicy, now: float) -> set[str]:
    pts = list(points)
    if not pts:
        return set()
    # Ties on created_at are broken by id so that the result is deterministic.
    latest = max(pts, key=lambda p: (p.created_at, p.point_id))
    keep = {latest.point_id}
    if policy.retention_hours == 0:
        return keep
    window_start = now - policy.retention_hours * HOUR
    in_window = [p for p in pts if p.created_at > window_start]
    first_hour = [p for p in in_window if p.created_at > now - HOUR]
    keep |= _latest_per_bucket(first_hour, policy.copy_frequency_s)
    keep |= _latest_per_bucket(in_window, HOUR)
    if policy.app_consistent_hours:
        app = [p for p in in_window if p.kind == "app"]
        keep |= _latest_per_bucket(app, policy.app_consistent_hours * HOUR)
    return keep
