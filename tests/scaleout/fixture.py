"""Two cloud services over one database and one storage account (issue 15): A made by the
harness, B a clone of A's data directory (``Cloud.clone``) with its own addresses."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from tests.harness import Cloud, Procs


def two_services(procs: Procs, root: Path) -> tuple[Cloud, Cloud]:
    a = Cloud(procs, root / "cloud-a").start()
    b = a.clone(root / "cloud-b").start()
    return a, b


def point_to(state_dir: Path, cloud: Cloud) -> None:
    """Make the provider or agent registered in ``state_dir`` call ``cloud`` from now on (a
    process started afterwards reads it): what a load balancer in front of several cloud
    services does, one connection at a time."""
    path = state_dir / "registration.json"
    doc = json.loads(path.read_text())
    doc["endpoints"]["api"] = cloud.endpoint
    doc["endpoints"]["registration"] = f"{cloud.host}:{cloud.reg_port}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def db_all(cloud: Cloud, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Rows of the services' shared metadata database (read as a test, never written)."""
    conn = sqlite3.connect(cloud.data_dir / "metadata.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def db_one(cloud: Cloud, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
    rows = db_all(cloud, sql, args)
    return rows[0] if rows else None
