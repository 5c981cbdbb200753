"""Issue 2, must-show 4: kill -9 of cloudsvc under registration load loses no acknowledged
registration and leaves a database that passes PRAGMA integrity_check."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from asrclock import SystemClock
from asrerrors import AsrError
from registration.enrol import register
from tests.harness import Cloud, Procs, Site, wait_for


def _integrity(cloud: Cloud) -> str:
    """SQLite's integrity_check; PostgreSQL keeps its own consistency (WAL), so reading a table is
    the check there."""
    if cloud.database_url:
        cloud.sql("SELECT count(*) FROM servers")
        return "ok"
    conn = sqlite3.connect(cloud.data_dir / "metadata.db")
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_kill9_during_registration_load(procs: Procs, tmp_path: Path) -> None:
    cloud = Cloud(procs, tmp_path / "cloud").start()
    cloud.asr("vault", "create", "v", "--region", "japaneast")
    site = Site(cloud, tmp_path, "v")
    site.new_key()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(w: int) -> None:
        i = 0
        while not stop.is_set():
            name = f"host-{w}-{i}"
            i += 1
            try:
                register(key_file=str(site.key), role="agent", name=name,
                         state_dir=str(tmp_path / "agents" / name), clock=SystemClock(), timeout=5,
                         provider_address="127.0.0.1:1")
            except AsrError:
                continue  # not acknowledged: may or may not be in the store
            with lock:
                acked.append(name)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 40, 120, what="registrations under load")
    assert cloud.proc is not None
    cloud.proc.kill9()
    stop.set()
    for t in threads:
        t.join(30)
    snapshot = set(acked)
    assert len(snapshot) >= 40

    assert _integrity(cloud) == "ok"
    cloud.start()
    listed = {s["name"] for s in cloud.asr_json("server", "list", "--vault", "v")}
    assert snapshot <= listed, sorted(snapshot - listed)
    assert _integrity(cloud) == "ok"
