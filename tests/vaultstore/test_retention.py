"""The retention rule as a pure function (hypothesis properties plus worked examples)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudsvc.vaultstore import RetentionPolicy, points_to_keep

NOW = 1_780_000_000.0
H = 3600.0


@dataclass(frozen=True)
class P:
    point_id: str
    created_at: float
    kind: str


points_st = st.lists(
    st.tuples(st.floats(0, 30 * H), st.sampled_from(["crash", "app"])), max_size=60
).map(lambda xs: [P(f"p{i}", NOW - age, kind) for i, (age, kind) in enumerate(xs)])
policy_st = st.builds(
    RetentionPolicy,
    copy_frequency_s=st.sampled_from([30.0, 300.0, 900.0]),
    retention_hours=st.integers(0, 24),
    app_consistent_hours=st.integers(0, 12),
)


@settings(max_examples=300, deadline=None)
@given(points=points_st, policy=policy_st)
def test_properties(points: list[P], policy: RetentionPolicy) -> None:
    keep = points_to_keep(points, policy, NOW)
    ids = {p.point_id for p in points}
    assert keep <= ids
    if not points:
        assert keep == set()
        return
    latest = max(points, key=lambda p: (p.created_at, p.point_id))
    assert latest.point_id in keep
    # Idempotent: pruning the kept set again keeps all of it.
    assert points_to_keep([p for p in points if p.point_id in keep], policy, NOW) == keep
    window = policy.retention_hours * H
    for p in points:
        if p.point_id in keep and p is not latest:
            assert NOW - p.created_at < window
    if policy.retention_hours == 0:
        assert keep == {latest.point_id}
        return
    # Every clock hour in the window that has a point keeps one of them.
    by_hour: dict[int, set[str]] = {}
    for p in points:
        if NOW - p.created_at < window:
            by_hour.setdefault(int(p.created_at // H), set()).add(p.point_id)
    for members in by_hour.values():
        assert members & keep
    # Bounded: first-hour slots + one per hour + app slots + the latest.
    first_hour = int(H // policy.copy_frequency_s) + 1
    app = policy.retention_hours // policy.app_consistent_hours + 1 if policy.app_consistent_hours else 0
    assert len(keep) <= first_hour + policy.retention_hours + 1 + app + 1


def test_worked_example() -> None:
    # A point every 5 minutes for 3 hours, app-consistent every hour on the hour.
    start = (NOW // H) * H - 3 * H
    pts = [P(f"p{i}", start + i * 300, "app" if i % 12 == 0 else "crash") for i in range(37)]
    now = start + 36 * 300 + 1
    keep = points_to_keep(pts, RetentionPolicy(300, 2, 1), now)
    first_hour = {p.point_id for p in pts if p.created_at > now - H}
    assert first_hour <= keep and len(first_hour) == 12
    # Older than an hour but within 2 hours: the latest of each clock hour (p23 for the hour
    # starting at p12; p24, the app point on the hour, is the latest of its own hour).
    middle = {p.point_id for p in pts if now - 2 * H < p.created_at <= now - H} & keep
    assert middle == {"p23", "p24"}
    assert "p0" not in keep
    assert points_to_keep(pts, RetentionPolicy(300, 0, 0), now) == {"p36"}
