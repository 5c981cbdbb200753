"""Billing: protected VMs pro-rated by day, 100 GB included per VM, the excess per GB; money
to the cent (half up), bytes whole, days to 4 decimals; usage metered per day in the metadata
DB and kept when points go. Replicated-then-pruned through the real daemons:
tests/replication/test_billing_metered.py."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asrclock import FakeClock
from asrerrors import UsageError
from cloudsvc.billing import GB, Billing, VmUsage, compute, intervals_from_events, month_bounds
from cloudsvc.schema import MIGRATIONS
from metastore.database import Database, Migration


def ts(day: int, hour: int = 0, month: int = 11) -> float:
    return datetime(2026, month, day, hour, tzinfo=UTC).timestamp()


def test_pro_rated_by_day_and_excess_storage() -> None:
    # one VM the whole of November, one for 15 days, one migrated away on the 10th
    a = VmUsage("a", "web01", [(ts(1, month=10), ts(1, month=12))], replicated_bytes=150 * GB)
    b = VmUsage("b", "db01", [(ts(16), ts(1, month=12))], replicated_bytes=10 * GB)
    c = VmUsage("c", "app01", intervals_from_events([(ts(1), "EnableProtection"), (ts(10), "Migrate")], ts(30)))
    rep = compute("2026-11", "onprem-to-cloud", [a, b, c])
    assert rep.days_in_month == 30
    assert [d for _, d in rep.lines] == [Decimal(30), Decimal(15), Decimal(9)]
    assert rep.average_protected_vms == Decimal("1.8000")
    assert rep.protection_charge == Decimal("45.00")               # 54 VM-days × 25 / 30
    assert rep.included_bytes == 180 * GB and rep.included_gb == 180.0
    assert rep.replicated_bytes == 160 * GB and rep.excess_bytes == 0  # 160 GB < 180 GB included
    cheaper = compute("2026-11", "onprem-to-onprem", [a, b, c])
    assert cheaper.protection_charge == Decimal("28.80") < rep.protection_charge
    heavy = compute("2026-11", "onprem-to-cloud", [VmUsage("x", "x", [(ts(1), ts(1, month=12))], 250 * GB)])
    assert heavy.excess_bytes == 150 * GB and heavy.storage_charge == Decimal("7.50")
    assert heavy.total == Decimal("32.50")


def test_money_is_rounded_to_the_cent_half_up_and_adds_up() -> None:
    # 7 hours protected in a 30-day month: 0.2917 days; 0.2917 × 25 / 30 = 0.243083… → 0.24
    a = VmUsage("a", "web01", [(ts(3), ts(3, 7))], replicated_bytes=1_234_567_891)
    rep = compute("2026-11", "onprem-to-cloud", [a])
    assert rep.lines[0][1] == Decimal("0.2917")
    assert rep.protection_charge == Decimal("0.24")
    # included: 100 GB × 0.2917 / 30 = 972,333,333.33… → 972,333,333 whole bytes
    assert rep.included_bytes == 972_333_333
    assert rep.excess_bytes == 1_234_567_891 - 972_333_333
    # 262,234,558 B × $0.05/GB = $0.0131117… → 0.01
    assert rep.storage_charge == Decimal("0.01")
    assert rep.total == rep.protection_charge + rep.storage_charge == Decimal("0.25")
    # half a cent rounds up, not to even: 10.1 GB excess × 0.05 = $0.505 → 0.51
    half = compute("2026-11", "onprem-to-cloud", [VmUsage("h", "h", [], replicated_bytes=10_100_000_000)])
    assert half.included_bytes == 0 and half.storage_charge == Decimal("0.51")
    # protected days carry 4 decimals: a minute is 0.0007 days, never 0.000694444…
    m = compute("2026-11", "onprem-to-cloud", [VmUsage("m", "m", [(ts(3), ts(3) + 60)])])
    assert m.lines[0][1] == Decimal("0.0007") and m.average_protected_vms == Decimal("0.0000")


def _db(tmp_path: Path, migrations: list[Migration] = MIGRATIONS) -> Database:
    db = Database(str(tmp_path / "metadata.db"), migrations)
    with db.write() as conn:
        conn.execute("INSERT OR IGNORE INTO vaults(id, name, region, created_at, ca_cert_pem, ca_key_pem)"
                     " VALUES ('v1', 'contoso', 'japaneast', 0, '', '')")
    return db


def test_meter_adds_up_per_vm_and_day_and_reports_by_month(tmp_path: Path) -> None:
    db = _db(tmp_path)
    billing = Billing(db, FakeClock(ts(30)))
    with db.write() as conn:
        billing.meter(conn, "v1", "vm-a", ts(3, 1), 100)
        billing.meter(conn, "v1", "vm-a", ts(3, 23), 50)          # the same UTC day
        billing.meter(conn, "v1", "vm-a", ts(30, 23), 7)
        billing.meter(conn, "v1", "vm-a", ts(1, month=12), 1000)  # December
        billing.meter(conn, "v1", "vm-b", ts(31, 23, month=10), 9)  # October
    rows = db.query("SELECT day, uploaded_bytes, points FROM replication_usage WHERE vm_id='vm-a' ORDER BY day")
    assert [tuple(r) for r in rows] == [("2026-11-03", 150, 2), ("2026-11-30", 7, 1), ("2026-12-01", 1000, 1)]
    assert billing.usage("v1", "2026-11") == {"vm-a": 157}
    assert billing.usage("v1", "2026-10") == {"vm-b": 9}
    # a VM with usage but no protection job in the vault's history is still billed for its bytes
    rep = billing.report("v1", "2026-11", "onprem-to-cloud")
    assert [(u.vm_id, u.replicated_bytes) for u, _ in rep.lines] == [("vm-a", 157)]
    db.close()


def test_upgrade_meters_existing_points_by_their_commit_day(tmp_path: Path) -> None:
    db = _db(tmp_path, MIGRATIONS[:6])
    with db.write() as conn:
        for pid, committed, size in (("p1", ts(3, 1), 10), ("p2", ts(3, 2), 20), ("p3", ts(4), 5)):
            conn.execute("INSERT INTO recovery_points(vault_id, vm_id, point_id, storage, created_at, kind,"
                         " uploaded_bytes, changed_blocks, committed_at) VALUES ('v1','vm-a',?,'s',?,'crash',?,1,?)",
                         (pid, committed - 5, size, committed))
    db.close()
    db = Database(str(tmp_path / "metadata.db"), MIGRATIONS)
    rows = db.query("SELECT day, uploaded_bytes, points FROM replication_usage ORDER BY day")
    assert [tuple(r) for r in rows] == [("2026-11-03", 30, 2), ("2026-11-04", 5, 1)]
    db.close()


def test_bad_month_and_scenario_refused() -> None:
    with pytest.raises(UsageError):
        month_bounds("2026-13")
    with pytest.raises(UsageError):
        compute("2026-11", "cloud-to-moon", [])


@given(st.lists(st.tuples(st.floats(0, 40 * 86400), st.sampled_from(["EnableProtection", "DisableProtection"])),
                max_size=20))
def test_intervals_never_overlap_and_stay_in_order(events: list[tuple[float, str]]) -> None:
    now = 41 * 86400.0
    ivs = intervals_from_events(events, now)
    for (a, b), (c, _) in zip(ivs, ivs[1:], strict=False):
        assert a <= b <= c
    assert all(a <= b for a, b in ivs)
