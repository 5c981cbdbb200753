"""Billing: protected VMs pro-rated by day, 100 GB included per VM, the excess per GB."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asrerrors import UsageError
from cloudsvc.billing import GB, VmUsage, compute, intervals_from_events, month_bounds


def ts(day: int, hour: int = 0, month: int = 11) -> float:
    return datetime(2026, month, day, hour, tzinfo=UTC).timestamp()


def test_pro_rated_by_day_and_excess_storage() -> None:
    # one VM the whole of November, one for 15 days, one migrated away on the 10th
    a = VmUsage("a", "web01", [(ts(1, month=10), ts(1, month=12))], replicated_bytes=150 * GB)
    b = VmUsage("b", "db01", [(ts(16), ts(1, month=12))], replicated_bytes=10 * GB)
    c = VmUsage("c", "app01", intervals_from_events([(ts(1), "EnableProtection"), (ts(10), "Migrate")], ts(30)))
    rep = compute("2026-11", "onprem-to-cloud", [a, b, c])
    assert rep.days_in_month == 30
    assert rep.average_protected_vms == pytest.approx((30 + 15 + 9) / 30)
    assert rep.protection_charge == pytest.approx(round(54 / 30 * 25.0, 2))
    assert rep.included_gb == pytest.approx(100 * 54 / 30)
    assert rep.replicated_bytes == 160 * GB and rep.excess_gb == 0.0  # 160 GB < 180 GB included
    cheaper = compute("2026-11", "onprem-to-onprem", [a, b, c])
    assert cheaper.protection_charge < rep.protection_charge
    heavy = compute("2026-11", "onprem-to-cloud", [VmUsage("x", "x", [(ts(1), ts(1, month=12))], 250 * GB)])
    assert heavy.excess_gb == pytest.approx(150.0) and heavy.storage_charge == pytest.approx(7.5)


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
