"""The host's upload throttle (agent.replication.throttle), as a unit: the schedule decides the
limit by the injected clock, the token bucket lets through exactly the limit over time,
shares it between threads, changes rate at the end of work hours, and every bad
``[throttle]`` key is ASR-0014 naming the key. The measurement against real daemons is
tests/agent/test_throttle_site.py."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.config import load
from agent.replication.throttle import MB, BandwidthSchedule, Throttle
from asrclock import FakeClock
from asrerrors import AsrError, InvalidConfig


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    """June 2026: the 1st is a Monday, the 6th a Saturday."""
    return datetime(2026, 6, day, hour, minute, second, tzinfo=UTC).timestamp()


def config(tmp_path: Path, throttle: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text('state_dir = "s"\nvm_dir = "v"\n\n[throttle]\n' + throttle)
    return p


def test_bandwidth_schedule_from_agent_toml(tmp_path: Path) -> None:
    cfg = load(str(config(tmp_path, 'work_hours_mb_s = 5\nnon_work_hours_mb_s = 12.5\nwork_days = ["mon", "sat"]\n'
                                    'work_start = "09:30"\nwork_end = "24:00"\ntimezone = "Asia/Tokyo"\n')))
    s = cfg.bandwidth
    assert s is not None
    assert s.work_rate == 5 * MB and s.non_work_rate == 12.5 * MB
    # 09:30 in Tokyo is 00:30 UTC
    assert s.at(at(1, 0, 30)) == ("work hours", 5 * MB)
    assert s.at(at(1, 0, 29, 59)) == ("non-work hours", 12.5 * MB)
    assert s.at(at(1, 14, 59, 59)) == ("work hours", 5 * MB)     # 23:59:59 in Tokyo: until midnight
    assert s.at(at(2, 3)) == ("non-work hours", 12.5 * MB)       # a Tuesday
    assert s.at(at(6, 3)) == ("work hours", 5 * MB)              # a Saturday
    # the defaults: Monday to Friday, 08:00 to 18:00 UTC; a missing rate is no limit
    d = load(str(config(tmp_path, "work_hours_mb_s = 2\n"))).bandwidth
    assert d is not None
    assert d.at(at(3, 8)) == ("work hours", 2 * MB) and d.at(at(3, 17, 59)) == ("work hours", 2 * MB)
    assert d.at(at(3, 18)) == ("non-work hours", None) and d.at(at(6, 12)) == ("non-work hours", None)
    # no table, or a table that limits nothing: no throttle
    (tmp_path / "plain.toml").write_text('state_dir = "s"\nvm_dir = "v"\n')
    assert load(str(tmp_path / "plain.toml")).bandwidth is None
    assert load(str(config(tmp_path, 'work_start = "07:00"\n'))).bandwidth is None


@pytest.mark.parametrize("body, words", [
    ("work_hours_mb_s = 0\n", ["throttle.work_hours_mb_s", "= 0", "at least 0.1"]),
    ('work_hours_mb_s = "5"\n', ["throttle.work_hours_mb_s", '"5"', "MB/s"]),
    ("non_work_hours_mb_s = nan\n", ["throttle.non_work_hours_mb_s", "nan"]),
    ("work_hours_mb_s = true\n", ["throttle.work_hours_mb_s", "true"]),
    ('work_hours_mb_s = 5\nwork_days = ["monday"]\n', ["throttle.work_days", "monday", "mon, tue"]),
    ('work_hours_mb_s = 5\nwork_days = ["mon", "mon"]\n', ["throttle.work_days", "each day once"]),
    ('work_hours_mb_s = 5\nwork_days = "mon"\n', ["throttle.work_days", "array"]),
    ('work_hours_mb_s = 5\nwork_start = "8:00"\n', ["throttle.work_start", '"8:00"', "HH:MM"]),
    ('work_hours_mb_s = 5\nwork_start = "24:00"\n', ["throttle.work_start", "23:59"]),
    ('work_hours_mb_s = 5\nwork_end = "07:00"\n', ["throttle.work_end", "after work_start (08:00)", "midnight"]),
    ('work_hours_mb_s = 5\ntimezone = "Mars/Olympus"\n', ["throttle.timezone", "Mars/Olympus", "IANA"]),
    ("work_hours = 5\n", ["unknown key throttle.work_hours", "work_hours_mb_s"]),
])
def test_bad_throttle_keys_are_invalid_config(tmp_path: Path, body: str, words: list[str]) -> None:
    with pytest.raises(InvalidConfig) as info:
        load(str(config(tmp_path, body)))
    # the message names the file; its one detail the key, the value and what is allowed
    assert str(tmp_path / "agent.toml") in info.value.message
    [text] = info.value.details
    for w in words:
        assert w in text, (w, text)


def test_throttle_must_be_a_table(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('state_dir = "s"\nvm_dir = "v"\nthrottle = 5\n')
    with pytest.raises(InvalidConfig, match="throttle must be a table"):
        load(str(tmp_path / "a.toml"))


def bucket(start: float, work_mb_s: float | None, other_mb_s: float | None) -> tuple[FakeClock, Throttle]:
    clock = FakeClock(start)
    schedule = BandwidthSchedule(work_mb_s * MB if work_mb_s else None, other_mb_s * MB if other_mb_s else None)
    return clock, Throttle(schedule, clock, sleep=clock.advance)


def test_bucket_lets_through_the_limit_and_no_more() -> None:
    clock, t = bucket(at(3, 10), 5, None)
    for _ in range(50):
        t.take(2 * MB)                  # 100 MB at 5 MB/s (the bucket starts empty)
    assert clock.now() - at(3, 10) == pytest.approx(100 / 5)
    # idle, the bucket banks half a second of the rate and no more
    clock.advance(60)
    before = clock.now()
    t.take(int(2.5 * MB))
    assert clock.now() == before        # the banked half second
    t.take(MB)
    assert clock.now() - before == pytest.approx(1 / 5)


def test_unlimited_hours_do_not_wait() -> None:
    clock, t = bucket(at(6, 10), 5, None)   # a Saturday: non-work hours, no limit
    for _ in range(1000):
        t.take(4 * MB)
    assert clock.now() == at(6, 10)


def test_end_of_work_hours_changes_the_rate() -> None:
    # 10 s before 18:00 at 1 MB/s, then 4 MB/s: 30 MB take 10 s + 20 MB / 4 MB/s
    clock, t = bucket(at(3, 17, 59, 50), 1, 4)
    for _ in range(300):
        t.take(100_000)
    assert clock.now() - at(3, 17, 59, 50) == pytest.approx(10 + 20 / 4, abs=0.1)
    # and back: Thursday 08:00 is work hours again
    clock.set(at(4, 8))
    start = clock.now()
    for _ in range(10):
        t.take(100_000)
    assert clock.now() - start == pytest.approx(1.0)


def test_waiters_are_served_in_turn_from_one_bucket() -> None:
    """Uploaders in several threads draw from the one bucket: whatever their number, the
    bytes let through by any moment never exceed the limit's worth (plus one burst)."""
    clock = FakeClock(at(3, 10))
    gate = threading.Condition()
    released: list[tuple[float, int]] = []

    def sleep(seconds: float) -> None:   # time moves only when the test moves it
        with gate:
            now = clock.now()
            gate.wait_for(lambda: clock.now() > now, timeout=10)

    t = Throttle(BandwidthSchedule(MB, MB), clock, sleep=sleep)

    def upload() -> None:
        for _ in range(10):
            t.take(100_000)
            with gate:
                released.append((clock.now(), 100_000))

    threads = [threading.Thread(target=upload) for _ in range(3)]
    for th in threads:
        th.start()
    start = clock.now()
    while any(th.is_alive() for th in threads):
        with gate:
            clock.advance(0.05)
            gate.notify_all()
        for th in threads:
            th.join(timeout=0.01)
    assert sum(n for _, n in released) == 3 * MB
    for moment, _ in released:
        sent = sum(n for t_, n in released if t_ <= moment)
        assert sent <= (moment - start) * MB + 100_000, (moment - start, sent)
    assert clock.now() - start >= 3.0 - 0.05


def test_close_ends_a_waiting_upload() -> None:
    from asrclock import SystemClock

    t = Throttle(BandwidthSchedule(0.1 * MB, 0.1 * MB), SystemClock())
    t.take(50_000)                      # the burst
    failed: list[AsrError] = []

    def waiter() -> None:
        try:
            t.take(10 * MB)             # 100 s at this rate
        except AsrError as err:
            failed.append(err)

    th = threading.Thread(target=waiter)
    th.start()
    t.close()
    th.join(timeout=10)
    assert not th.is_alive()
    assert failed and "stopping" in failed[0].message
