"""Two cloud services over one database and one storage account (issue 15): A made by the
harness, B a clone of A's data directory (``Cloud.clone``) with its own addresses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cloudsvc.schema import MIGRATIONS
from metastore.database import Database, open_database
from tests.harness import Cloud, Procs


def two_services(procs: Procs, root: Path, share_indexes: bool = True) -> tuple[Cloud, Cloud]:
    a = Cloud(procs, root / "cloud-a").start()
    b = a.clone(root / "cloud-b", share_indexes=share_indexes).start()
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


def db_all(cloud: Cloud, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """Rows of the services' shared metadata (read as a test, never written), either engine."""
    return cloud.sql(sql, args)


def db_one(cloud: Cloud, sql: str, args: tuple[Any, ...] = ()) -> Any:
    rows = db_all(cloud, sql, args)
    return rows[0] if rows else None


def metadata_db(path: Path) -> Database:
    """A fresh, migrated metadata database with one vault (v1) for unit tests of what several
    processes share: SQLite at ``path``, or with ASR_TEST_DATABASE=postgresql a new database
    of the session's PostgreSQL (the SQL must hold on both engines)."""
    from tests import pgserver

    db = open_database(pgserver.server().new_database() if pgserver.wanted() else str(path), MIGRATIONS)
    with db.write() as conn:
        conn.execute("INSERT INTO vaults(id, name, region, created_at, ca_cert_pem, ca_key_pem)"
                     " VALUES ('v1', 'contoso', 'japaneast', 0, '', '')")
    return db
