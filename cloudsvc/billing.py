"""Billing: what a vault's protection cost in a month.

A protected VM costs a monthly unit price pro-rated by the average number of VMs protected
per day (on-premises→cloud and on-premises→on-premises prices differ); each protected VM
includes 100 GB of replication and storage per month (pro-rated the same way), and what
was replicated beyond that is billed per GB.

Protection intervals come from the jobs that start and end protection (EnableProtection
succeeded → protected; DisableProtection or Migrate succeeded → not), so a migrated VM stops
costing the moment the migration commits.

Each VM is billed under **one scenario**, the one its latest EnableProtection job recorded
in its context: ``onprem-to-onprem`` for a VM protected to a target cloud (site to site, the
lower price), ``onprem-to-cloud`` otherwise (and for jobs from before scenarios were
recorded). A report for a scenario lists the VMs of that scenario only.

Replication is **metered when it happens**: the transaction that commits a recovery point
also adds the bytes the agent uploaded for it to ``replication_usage`` (this module owns the
table; ``replication`` writes it only through :meth:`Billing.meter`), per VM and UTC day of
the commit. Retention and disabling protection delete points, never usage: data replicated
and then pruned is still billed, in the month it was replicated.

Rounding, so that a bill adds up from what it shows:

* each VM's protected days are rounded to 4 decimals (about 9 seconds), and the protection
  charge is the sum of those days × unit price ÷ days in the month;
* bytes are whole bytes: the included allowance is 100 GB × that sum ÷ days in the month,
  rounded to a byte; the excess is what was replicated beyond it;
* money is rounded to the cent, half up (``decimal``, never binary floats), and the total is
  the sum of the rounded charges.
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from asrclock import Clock
from asrerrors import UsageError
from metastore.database import Conn, Database

PRICES = {"onprem-to-cloud": Decimal("25.00"), "onprem-to-onprem": Decimal("16.00")}
PRICE_PER_EXCESS_GB = Decimal("0.05")
INCLUDED_GB_PER_VM = 100
GB = 1_000_000_000
STARTS = ("EnableProtection",)
ENDS = ("DisableProtection", "Migrate")
CENT = Decimal("0.01")
DAY_PLACES = Decimal("0.0001")


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


def day_of(t: float) -> str:
    """The UTC day (YYYY-MM-DD) usage at epoch seconds ``t`` is metered under."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


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


def protected_days(intervals: list[tuple[float, float]], lo: float, hi: float) -> Decimal:
    """Days protected within [lo, hi), rounded to 4 decimals."""
    seconds = sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals)
    return (Decimal(repr(seconds)) / 86400).quantize(DAY_PLACES, ROUND_HALF_UP)


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, ROUND_HALF_UP)


@dataclass
class Report:
    month: str
    scenario: str
    days_in_month: int
    average_protected_vms: Decimal     # shown to 4 decimals; the charge uses the exact quotient
    unit_price: Decimal
    protection_charge: Decimal
    replicated_bytes: int
    included_bytes: int
    excess_bytes: int
    storage_charge: Decimal
    total: Decimal
    lines: list[tuple[VmUsage, Decimal]]

    @property
    def included_gb(self) -> float:
        return self.included_bytes / GB

    @property
    def excess_gb(self) -> float:
        return self.excess_bytes / GB


def compute(month: str, scenario: str, usages: list[VmUsage]) -> Report:
    if scenario not in PRICES:
        raise UsageError(f"scenario {scenario!r} is unknown; allowed: {', '.join(PRICES)}")
    lo, hi, days = month_bounds(month)
    lines = [(u, protected_days(u.intervals, lo, hi)) for u in usages]
    lines = [(u, d) for u, d in lines if d > 0 or u.replicated_bytes]
    vm_days = sum((d for _, d in lines), Decimal(0))
    unit = PRICES[scenario]
    replicated = sum(u.replicated_bytes for u, _ in lines)
    included = int((vm_days * INCLUDED_GB_PER_VM * GB / days).quantize(Decimal(1), ROUND_HALF_UP))
    excess = max(0, replicated - included)
    protection = cents(vm_days * unit / days)
    storage = cents(Decimal(excess) * PRICE_PER_EXCESS_GB / GB)
    return Report(month, scenario, days, (vm_days / days).quantize(DAY_PLACES, ROUND_HALF_UP), unit, protection,
                  replicated, included, excess, storage, protection + storage, lines)


def _vm_ids(context: str) -> list[str]:
    ctx = json.loads(context or "{}")
    if "vm_id" in ctx:
        return [str(ctx["vm_id"])]
    return [str(v) for v in ctx.get("vms", {})]


def scenario_of(context: str) -> str:
    """The billing scenario an EnableProtection job recorded (``protection``)."""
    return str(json.loads(context or "{}").get("scenario") or "onprem-to-cloud")


class Billing:
    """A vault's month, from its job history and its replication usage (the only writer of
    ``replication_usage``)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def meter(self, conn: Conn, vault_id: str, vm_id: str, at: float, uploaded_bytes: int) -> None:
        """Add one committed point's uploaded bytes to the VM's usage of the day of ``at``,
        inside the caller's transaction (the one that commits the point)."""
        conn.execute(
            "INSERT INTO replication_usage AS u(vault_id, vm_id, day, uploaded_bytes, points) VALUES (?,?,?,?,1)"
            " ON CONFLICT(vault_id, vm_id, day) DO UPDATE SET"
            " uploaded_bytes = u.uploaded_bytes + excluded.uploaded_bytes, points = u.points + 1",
            (vault_id, vm_id, day_of(at), max(0, int(uploaded_bytes))))

    def usage(self, vault_id: str, month: str) -> dict[str, int]:
        """vm_id -> bytes replicated in the month (UTC days)."""
        lo, hi, _ = month_bounds(month)
        rows = self.db.query(
            "SELECT vm_id, sum(uploaded_bytes) AS b FROM replication_usage WHERE vault_id=? AND day >= ? AND day < ?"
            " GROUP BY vm_id", (vault_id, day_of(lo), day_of(hi)))
        return {r["vm_id"]: int(r["b"]) for r in rows}

    def report(self, vault_id: str, month: str, scenario: str) -> Report:
        kinds = STARTS + ENDS
        events: dict[str, list[tuple[float, str]]] = {}
        names: dict[str, str] = {}
        scenario = scenario or "onprem-to-cloud"
        scenarios: dict[str, str] = {}
        rows = self.db.query(
            f"SELECT kind, target, ended_at, context FROM jobs WHERE vault_id=? AND state='Succeeded'"
            f" AND kind IN ({','.join('?' * len(kinds))}) ORDER BY ended_at", (vault_id, *kinds))
        for r in rows:
            for vm_id in _vm_ids(r["context"]):
                events.setdefault(vm_id, []).append((float(r["ended_at"]), r["kind"]))
                names.setdefault(vm_id, r["target"])
                if r["kind"] in STARTS:
                    scenarios[vm_id] = scenario_of(r["context"])
        used = self.usage(vault_id, month)
        now = self.clock.now()
        usages = [VmUsage(vm_id, names.get(vm_id, vm_id), intervals_from_events(events.get(vm_id, []), now),
                          used.get(vm_id, 0))
                  for vm_id in sorted(set(events) | set(used), key=lambda v: (names.get(v, v), v))
                  if scenarios.get(vm_id, "onprem-to-cloud") == scenario]
        return compute(month, scenario, usages)
