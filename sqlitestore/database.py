"""The embedded metadata store: SQLite in WAL mode with versioned migrations.

Durability: ``synchronous=FULL`` so a transaction that returned survives power loss, not only
a process crash; a registration is acknowledged to the caller only after its transaction
committed. Writers are serialised in-process by one lock (SQLite allows one writer at a
time; taking the lock first avoids "database is locked" churn), and ``BEGIN IMMEDIATE``
plus ``busy_timeout`` covers other processes sharing the file.

A full disk is :class:`DiskFull` (ASR-0061) wherever SQLite reports it (a statement, the
commit, a query), never a raw ``sqlite3`` error: callers map nothing themselves. Other SQLite
errors pass through unchanged (callers catch ``IntegrityError`` for duplicates).

Each thread gets its own connection (so readers never wait for each other or for a writer);
:meth:`Database.close` closes all of them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from asrerrors import AsrError, DiskFull, StorageError

log = logging.getLogger(__name__)


def is_disk_full(exc: BaseException) -> bool:
    """Whether an SQLite error means the disk (or the database's size limit) is full."""
    if not isinstance(exc, sqlite3.Error):
        return False
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite rolls some failures back by itself (a full disk can); a second ROLLBACK would
    # raise and hide the original error.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class Database:
    def __init__(self, path: str, migrations: Sequence[str]) -> None:
        self.path = path
        self.migrations = list(migrations)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._conns: list[sqlite3.Connection] = []  # every thread's, for close()
        self._conns_lock = threading.Lock()
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
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, for statements that need no write transaction of their
        own (filling a TEMP table). Wrap its use in :meth:`full_disk_errors`."""
        return self._conn()

    @contextmanager
    def full_disk_errors(self) -> Iterator[None]:
        """Raise :class:`DiskFull` for an SQLite "full" error inside the block."""
        try:
            yield
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                raise self._full(exc) from exc
            raise

    def _full(self, exc: BaseException) -> DiskFull:
        return DiskFull(f"database {self.path} cannot grow: {exc}")

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self.full_disk_errors():
            return self._conn().execute(sql, args).fetchall()

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        with self.full_disk_errors():
            return self._conn().execute(sql, args).fetchone()

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One short write transaction; commits on success, rolls back on any error.

        ``durable=False`` commits without waiting for the fsync (``synchronous=NORMAL`` for
        this transaction only): a process crash keeps it (WAL), a power loss may drop it.
        For frequent bookkeeping whose loss is harmless; the next durable commit makes it
        durable too."""
        with self._write_lock:
            conn = self._conn()
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            self._local.after_commit = []
            try:
                with self.full_disk_errors():
                    conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException as exc:
                    _rollback(conn)
                    if is_disk_full(exc):
                        raise self._full(exc) from exc
                    raise
                try:
                    conn.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    _rollback(conn)
                    if is_disk_full(exc):
                        raise self._full(exc) from exc
                    raise StorageError(f"metadata store commit failed: {exc}") from exc
                after, self._local.after_commit = self._local.after_commit, None
                for fn in after:
                    try:
                        fn()
                    except Exception:  # noqa: BLE001 - the transaction committed: do not report it failed
                        log.exception("after-commit action failed")
            finally:
                self._local.after_commit = None
                if not durable:
                    conn.execute("PRAGMA synchronous=FULL")

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once this thread's current write transaction has committed; never if it
        rolls back. For telling the world (a log line) about what the transaction did: a line
        written inside it could describe a change that never happened."""
        pending: list[Callable[[], None]] | None = getattr(self._local, "after_commit", None)
        if pending is None:
            raise RuntimeError("after_commit() needs a write transaction of this thread (Database.write)")
        pending.append(fn)

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
        """Close every thread's connection (the caller makes sure none is in use)."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
