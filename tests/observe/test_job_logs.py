"""Issue 12: one log line per job start and per job end, written once the transaction that
made the change committed (``Database.after_commit``): a job whose transaction rolled back was
never started and is never logged. Real SQLite, the real Jobs owner, a fake clock."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from asrclock import FakeClock
from asrerrors import NotFound
from cloudsvc.jobs import Jobs
from cloudsvc.schema import MIGRATIONS
from metastore.database import Database


@pytest.fixture
def jobs(tmp_path: Path) -> Jobs:
    db = Database(str(tmp_path / "metadata.db"), MIGRATIONS)
    with db.write() as conn:
        conn.execute("INSERT INTO vaults(id, name, region, created_at, ca_cert_pem, ca_key_pem)"
                     " VALUES ('v1', 'contoso', 'japaneast', 0, '', '')")
    return Jobs(db, FakeClock(1_000.0))


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "cloudsvc.jobs"]


def test_start_and_end_are_logged_after_commit(jobs: Jobs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloudsvc.jobs")
    with pytest.raises(RuntimeError), jobs.db.write() as conn:
        jobs.create(conn, "v1", "EnableProtection", "web01", [("Enable replication", "")])
        raise RuntimeError("a later step of the same transaction failed")
    assert _lines(caplog) == []                        # rolled back: no job, no line

    with jobs.db.write() as conn:
        job = jobs.create(conn, "v1", "EnableProtection", "web01", [("Enable replication", "")])
        assert _lines(caplog) == []                    # not before the commit
    assert _lines(caplog) == [("INFO", f"job {job} started: EnableProtection web01")]
    record = [r for r in caplog.records if r.name == "cloudsvc.jobs"][0]
    assert record.fields == {"job": job, "kind": "EnableProtection", "target": "web01",  # type: ignore[attr-defined]
                             "vault_id": "v1"}

    jobs.clock.advance(12.5)  # type: ignore[attr-defined]
    with jobs.db.write() as conn:
        jobs.finish_task(conn, job, 0, False, error=NotFound("VM web01 is gone"))
    assert _lines(caplog)[-1] == ("WARNING", f"job {job} failed: EnableProtection web01 (ASR-0040)")
    end = [r for r in caplog.records if r.name == "cloudsvc.jobs"][-1]
    assert end.fields["state"] == "Failed" and end.fields["seconds"] == 12.5  # type: ignore[attr-defined]
    assert end.fields["code"] == "ASR-0040"  # type: ignore[attr-defined]


def test_succeeded_and_cancelled_jobs_end_once(jobs: Jobs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloudsvc.jobs")
    with jobs.db.write() as conn:
        ok = jobs.create(conn, "v1", "ConfigureProtection", "gold", [("Configure host hv01", "")])
        stuck = jobs.create(conn, "v1", "DisableProtection", "db01", [("Disable replication", "")])
    with jobs.db.write() as conn:
        jobs.finish_task(conn, ok, 0, True)
        jobs.cancel(conn, stuck, NotFound("the site is gone"))
        jobs.cancel(conn, stuck, NotFound("cancelled twice"))    # already ended: nothing more
    ends = _lines(caplog)[2:]
    assert ends == [("INFO", f"job {ok} succeeded: ConfigureProtection gold"),
                    ("INFO", f"job {stuck} cancelled: DisableProtection db01 (ASR-0040)")]
