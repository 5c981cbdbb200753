"""Billing: what a vault's protection cost in a month.

A protected VM costs a monthly unit price pro-rated by the average number of VMs protected
per day (on-premises→cloud and on-premises→on-premises prices differ); each protected VM
includes 100 GB of replication and storage per month (pro-rated the same way), and what
was replicated beyond that is billed per GB.

Protection intervals come from the jobs that start and end protection (EnableProtection
succeeded → protected; DisableProtection or Migrate succeeded → not), so billing needs no
state of its own and a migrated VM stops costing the moment the migration commits.
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asrclock import Clock
from asrerrors import UsageError
from sqlitestore.database import Database

PRICES = {"onprem-to-cloud": 25.0, "onprem-to-onprem": 16.0}
PRICE_PER_EXCESS_GB = 0.05
INCLUDED_GB_PER_VM = 100.0
GB = 1_000_000_000
STARTS = ("EnableProtection",)
ENDS = ("DisableProtection", "Migrate")


@dataclass
class VmUsage:
    vm_id: str
    name: str
    intervals: list[tuple[float, float]] = field(default_factory=list)
    replicated_bytes: int = 0


def month_bounds(month: str) -> tuple[float, float, int]:
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError as exc:
        raise UsageError(f"month {month!r} must be YYYY-MM, e.g. 2026-11") from exc
    days = calendar.monthrange(start.year, start.month)[1]
    end = datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp(), days


def intervals_from_events(events: list[tuple[float, str]], now: float) -> list[tuple[float, float]]:
    """(time, kind) job completions, oldest first -> protected [start, end) intervals."""
    out: list[tuple[float, float]] = []
    started: float | None = None
    for at, kind in sorted(events):
        if kind in STARTS and started is None:
            started = at
        elif kind in ENDS and started is not None:
            out.append((started, at))
            started = None
    if started is not None:
        out.append((started, now))
    return out


def protected_days(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals) / 86400.0


@dataclass
class Report:
    month: str
    scenario: str
    days_in_month: int
    average_protected_vms: float
    unit_price: float
    protection_charge: float
    replicated_bytes: int
    included_gb: float
    excess_gb: float
    storage_charge: float
    total: float
    lines: list[tuple[VmUsage, float]]


def compute(month: str, scenario: str, usages: list[VmUsage]) -> Report:
    if scenario not in PRICES:
        raise UsageError(f"scenario {scenario!r} is unknown; allowed: {', '.join(PRICES)}")
    lo, hi, days = month_bounds(month)
    lines = [(u, protected_days(u.intervals, lo, hi)) for u in usages]
    lines = [(u, d) for u, d in lines if d > 0 or u.replicated_bytes]
    vm_days = sum(d for _, d in lines)
    avg = vm_days / days
    unit = PRICES[scenario]
    replicated = sum(u.replicated_bytes for u, _ in lines)
    included = INCLUDED_GB_PER_VM * avg
    excess = max(0.0, replicated / GB - included)
    protection = round(avg * unit, 2)
    storage = round(excess * PRICE_PER_EXCESS_GB, 2)
    return Report(month, scenario, days, avg, unit, protection, replicated, included, excess, storage,
                  round(protection + storage, 2), lines)


def _vm_ids(context: str) -> list[str]:
    ctx = json.loads(context or "{}")
    if "vm_id" in ctx:
        return [str(ctx["vm_id"])]
    return [str(v) for v in ctx.get("vms", {})]


class Billing:
    """A vault's month, read from its job history and recovery point records."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def report(self, vault_id: str, month: str, scenario: str) -> Report:
        lo, hi, _ = month_bounds(month)
        kinds = STARTS + ENDS
        events: dict[str, list[tuple[float, str]]] = {}
        names: dict[str, str] = {}
        rows = self.db.query(
            f"SELECT kind, target, ended_at, context FROM jobs WHERE vault_id=? AND state='Succeeded'"
            f" AND kind IN ({','.join('?' * len(kinds))})", (vault_id, *kinds))
        for r in rows:
            for vm_id in _vm_ids(r["context"]):
                events.setdefault(vm_id, []).append((float(r["ended_at"]), r["kind"]))
                names.setdefault(vm_id, r["target"])
        usages = []
        now = self.clock.now()
        for vm_id, evs in events.items():
            got = self.db.one(
                "SELECT coalesce(sum(uploaded_bytes), 0) AS b FROM recovery_points WHERE vault_id=? AND vm_id=?"
                " AND created_at >= ? AND created_at < ?", (vault_id, vm_id, lo, hi))
            usages.append(VmUsage(vm_id, names[vm_id], intervals_from_events(evs, now), int(got["b"]) if got else 0))
        return compute(month, scenario or "onprem-to-cloud", usages)
