"""The event history's own rules (cloudsvc/events.py), on a real metadata DB: filters
combine, severity means "this and worse", a health change is one event, and the table is
bounded by age and by count per vault."""

from __future__ import annotations

from pathlib import Path

from asrclock import FakeClock
from cloudsvc.events import EventFilter, Events, Severity
from cloudsvc.schema import MIGRATIONS
from metastore.database import Database


def _events(tmp_path: Path, **kw: float) -> tuple[Events, FakeClock, Database]:
    db = Database(str(tmp_path / "m.db"), MIGRATIONS)
    with db.write() as conn:
        for vid in ("v1", "v2"):
            conn.execute("INSERT INTO vaults(id, name, region, created_at, ca_cert_pem, ca_key_pem)"
                         " VALUES (?,?,?,?,?,?)", (vid, vid, "japaneast", 0, "", ""))
    clock = FakeClock(1_780_000_000.0)
    return Events(db, clock, **kw), clock, db  # type: ignore[arg-type]


def test_filters_combine_and_severity_is_this_and_worse(tmp_path: Path) -> None:
    ev, clock, db = _events(tmp_path)
    with db.write() as conn:
        ev.record(conn, "v1", Severity.INFO, "EVT-0007", "agent hv01 registered", server="agent/hv01")
        clock.advance(10)
        ev.record(conn, "v1", Severity.WARNING, "ASR-0045", "hook failed", vm_id="vm-a", vm_name="a",
                  server="agent/hv01")
        clock.advance(10)
        ev.record(conn, "v1", Severity.CRITICAL, "ASR-0046", "source missing", vm_id="vm-b", vm_name="b",
                  server="provider/hv01")
        ev.record(conn, "v2", Severity.CRITICAL, "ASR-0046", "another vault")

    def codes(**f: object) -> list[str]:
        return [e.code for e in ev.list("v1", EventFilter(**f))]  # type: ignore[arg-type]

    assert codes() == ["ASR-0046", "ASR-0045", "EVT-0007"]
    assert codes(severity=Severity.WARNING) == ["ASR-0046", "ASR-0045"]
    assert codes(severity=Severity.CRITICAL) == ["ASR-0046"]
    assert codes(server="hv01") == ["ASR-0046", "ASR-0045", "EVT-0007"]          # either role
    assert codes(server="agent/hv01") == ["ASR-0045", "EVT-0007"]
    assert codes(since=clock.now() - 10) == ["ASR-0046", "ASR-0045"]
    assert codes(vm_id="vm-a", severity=Severity.WARNING, server="agent/hv01") == ["ASR-0045"]
    assert codes(limit=1) == ["ASR-0046"]


def test_a_health_change_is_one_event(tmp_path: Path) -> None:
    ev, clock, db = _events(tmp_path)
    seen = []
    for health in ("Normal", "Normal", "Warning", "Warning", "Critical", "Normal"):
        with db.write() as conn:
            seen.append(ev.health_seen(conn, "v1", "vm-a", "a", health, [f"why {health}"]))
    assert seen == ["", "", "Normal", "", "Warning", "Critical"]   # the health before each change
    got = [(e.severity, e.message) for e in ev.list("v1")]
    assert got == [("Info", "a: replication health Critical -> Normal: why Normal"),
                   ("Critical", "a: replication health Warning -> Critical: why Critical"),
                   ("Warning", "a: replication health Normal -> Warning: why Warning")]
    with db.write() as conn:   # protection ended: the last seen health goes, the events stay
        ev.forget_health(conn, set())
    assert db.query("SELECT * FROM health_seen") == [] and len(ev.list("v1")) == 3


def test_the_history_is_bounded_by_age_and_count(tmp_path: Path) -> None:
    ev, clock, db = _events(tmp_path, retention_days=90, max_per_vault=5)
    with db.write() as conn:
        for i in range(8):
            ev.record(conn, "v1", Severity.INFO, "EVT-0001", f"v1 #{i}")
            ev.record(conn, "v2", Severity.INFO, "EVT-0001", f"v2 #{i}")
    assert ev.trim() == 6
    assert [e.message for e in ev.list("v1")] == [f"v1 #{i}" for i in (7, 6, 5, 4, 3)]
    assert len(ev.list("v2")) == 5
    clock.advance(91 * 86400)
    with db.write() as conn:
        ev.record(conn, "v1", Severity.INFO, "EVT-0001", "new")
    assert ev.trim("v1") == 5                      # only v1's, and only the old ones
    assert [e.message for e in ev.list("v1")] == ["new"] and len(ev.list("v2")) == 5
