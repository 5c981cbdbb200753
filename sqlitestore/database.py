"""The embedded metadata store: SQLite in WAL mode with versioned migrations.

Durability: ``synchronous=FULL`` so a transaction that returned survives power loss, not only
a process crash; a registration is acknowledged to the caller only after its transaction
committed. Writers are serialised in-process by one lock (SQLite allows one writer at a
time; taking the lock first avoids "database is locked" churn), and ``BEGIN IMMEDIATE``
plus ``busy_timeout`` covers other processes sharing the file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from asrerrors import AsrError, DiskFull, StorageError


class Database:
    def __init__(self, path: str, migrations: Sequence[str]) -> None:
        self.path = path
        self.migrations = list(migrations)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self.migrate()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, args).fetchall()

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        return self._conn().execute(sql, args).fetchone()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; commits on success, rolls back on any error."""
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                conn.execute("ROLLBACK")
                if "full" in str(exc).lower():
                    raise DiskFull(f"metadata store {self.path} is full: {exc}") from exc
                raise StorageError(f"metadata store commit failed: {exc}") from exc

    def schema_version(self) -> int:
        row = self._conn().execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def migrate(self) -> None:
        current = self.schema_version()
        if current > len(self.migrations):
            raise AsrError(
                f"metadata store {self.path} has schema version {current}, newer than this "
                f"release knows ({len(self.migrations)})",
                action="Run the release that created this data directory, or a newer one.",
            )
        for version, script in enumerate(self.migrations, start=1):
            if version <= current:
                continue
            with self.write() as conn:
                for stmt in script.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={version}")

    def integrity_check(self) -> str:
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
