"""The metadata store: SQLite in WAL mode (the default) or PostgreSQL, with versioned migrations.

Durability: ``synchronous=FULL`` so a transaction that returned survives power loss, not only
a process crash; a registration is acknowledged to the caller only after its transaction
committed. Writers are serialised in-process by one lock (SQLite allows one writer at a
time; taking the lock first avoids "database is locked" churn), and ``BEGIN IMMEDIATE``
plus ``busy_timeout`` covers other processes sharing the file.

A full disk is :class:`DiskFull` (ASR-0061) wherever SQLite reports it (a statement, the
commit, a query), never a raw ``sqlite3`` error: callers map nothing themselves. Other SQLite
errors pass through unchanged (callers catch :data:`IntegrityError` for duplicates).

Each thread gets its own connection (so readers never wait for each other or for a writer);
:meth:`Database.close` closes all of them. A cloud service has ~130 of them (two per gRPC
worker), so each keeps little: 256 KiB of pages and 32 prepared statements, and ``in_list``
makes at most ten statement texts per query shape, not one per list length.

Callers write one SQL dialect, the subset both engines accept: ``?`` placeholders,
``INSERT ... ON CONFLICT (...) DO UPDATE/NOTHING``, ``RETURNING`` instead of ``lastrowid``, no
two-argument MAX/MIN, no GROUP_CONCAT. :func:`open_database` picks the engine from a path or a
``postgresql://`` URL; ``metastore.postgres`` translates the little that differs (placeholders,
column types of the migrations). :class:`Row` and :class:`Conn` are what callers may rely on.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from asrerrors import AsrError, DiskFull, StorageError

log = logging.getLogger(__name__)

# A migration: one script for every engine, or one per engine (``{"sqlite": ..., "postgresql": ...}``)
# where no portable statement exists (a released SQLite entry is never edited, so its PostgreSQL
# twin sits beside it).
Migration = str | Mapping[str, str]


class Row(Protocol):
    """A result row, by position and by (case-insensitive) column name, like ``sqlite3.Row``."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def keys(self) -> list[str]: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """A connection inside a write transaction (or a thread's own, see ``connection()``)."""

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...


def _engine_errors(name: str) -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency; SQLite alone still works
        return (getattr(sqlite3, name),)
    return (getattr(sqlite3, name), getattr(psycopg, name))


# What a duplicate key or a broken constraint raises, whichever the engine: ``except IntegrityError``.
IntegrityError: tuple[type[Exception], ...] = _engine_errors("IntegrityError")
# Any error of either engine (``sqlite3.Error``, ``psycopg.Error``): what a store maps to its own errors.
DatabaseError: tuple[type[Exception], ...] = _engine_errors("Error")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an SQLite error means the disk (or the database's size limit) is full."""
    if not isinstance(exc, sqlite3.Error):
        return False
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


def script_for(migration: Migration, engine: str) -> str:
    return migration if isinstance(migration, str) else migration[engine]


def statements(script: str) -> list[str]:
    return [s for s in script.split(";") if s.strip()]


_CACHE_KIB = 256           # page cache of one connection (SQLite's default: 2,000 KiB)
_CACHED_STATEMENTS = 32    # prepared statements one connection keeps (Python's default: 128)


class Database:
    """The SQLite engine; :class:`metastore.postgres.PgDatabase` overrides the engine hooks."""

    engine = "sqlite"

    def __init__(self, path: str, migrations: Sequence[Migration], *, migrate: bool = True) -> None:
        """``migrate=False``: use the schema as it is (a reader such as a test's or a bench's)."""
        self.path = path   # what messages name (a PostgreSQL URL without its password)
        self.migrations = list(migrations)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._conns: list[Any] = []  # every thread's, for close()
        self._conns_lock = threading.Lock()
        # called (from the failing thread, so cheap and never raising) whenever a call finds the
        # store unreachable: the cloud service's readiness watch probes at once instead of at
        # its next round (only PostgreSQL raises MetadataUnavailable)
        self.on_unavailable: list[Callable[[], None]] = []
        if migrate:
            self.migrate()

    # --- engine hooks -----------------------------------------------------------------
    def _connect(self) -> Any:
        # Every thread has its own connection (a cloud service has ~130), so what each one keeps
        # is small: in WAL mode a connection drops its page cache whenever another one wrote,
        # so a big cache buys little, and the prepared statements a connection caches fill
        # slowly as its thread meets every query of the service. With SQLite's defaults (2 MiB
        # of pages, 128 statements each) the cloud service grew for hours under load.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False,
                               cached_statements=_CACHED_STATEMENTS)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _begin(self, conn: Any, durable: bool) -> None:
        if not durable:
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")

    def _commit(self, conn: Any) -> None:
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback(conn)
            if is_disk_full(exc):
                raise self._full(exc) from exc
            raise StorageError(f"metadata store commit failed: {exc}") from exc

    def _rollback(self, conn: Any) -> None:
        # SQLite rolls some failures back by itself (a full disk can); a second ROLLBACK would
        # raise and hide the original error.
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _end(self, conn: Any, durable: bool) -> None:
        if not durable:
            conn.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def full_disk_errors(self) -> Iterator[None]:
        """Raise :class:`DiskFull` for an SQLite "full" error inside the block (PostgreSQL:
        also ``MetadataUnavailable`` when the server cannot be reached)."""
        try:
            yield
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                raise self._full(exc) from exc
            raise

    def _version(self, conn: Any) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _set_version(self, conn: Any, version: int) -> None:
        conn.execute(f"PRAGMA user_version={version}")

    def ddl(self, stmt: str) -> str:
        """A statement of the migrations' dialect (SQLite's column types) in this engine's."""
        return stmt

    def integrity_check(self) -> str:
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

    def group_concat(self, expr: str) -> str:
        """An aggregate joining ``expr``'s values with commas (no portable spelling exists)."""
        return f"GROUP_CONCAT({expr})"

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        """A condition "``column`` is one of ``values``" and its parameters (a few hundred values
        at most: SQLite takes each as a parameter; at least one value).

        The list is padded to a power of two by repeating its last value (``IN`` ignores
        duplicates), so one query shape has at most ten statement texts, not one per length:
        every connection caches prepared statements, and a statement of hundreds of parameters
        holds tens of KiB. With one text per length, 64 threads' caches filled with them and the
        cloud service grew ~2 MiB a minute under load (docs/benchmarks.md)."""
        if not values:
            raise ValueError("in_list needs at least one value")
        size = 1 << (len(values) - 1).bit_length()
        padded = (*values, *(values[-1],) * (size - len(values)))
        return f"{column} IN ({','.join('?' * size)})", padded

    def json_text(self, column: str, key: str) -> str:
        """The top-level ``key`` of the JSON object in TEXT ``column`` (no portable spelling)."""
        return f"json_extract({column}, '$.{key}')"

    # --- common -----------------------------------------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def connection(self) -> Conn:
        """This thread's connection, for statements that need no write transaction of their
        own (filling a TEMP table). Wrap its use in :meth:`full_disk_errors`."""
        conn: Conn = self._conn()
        return conn

    def _full(self, exc: BaseException) -> DiskFull:
        return DiskFull(f"database {self.path} cannot grow: {exc}")

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        with self.full_disk_errors():
            rows: list[Row] = self._conn().execute(sql, args).fetchall()
            return rows

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> Row | None:
        with self.full_disk_errors():
            row: Row | None = self._conn().execute(sql, args).fetchone()
            return row

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[Conn]:
        """One short write transaction; commits on success, rolls back on any error.

        ``durable=False`` commits without waiting for the fsync (``synchronous=NORMAL`` for
        this transaction only; PostgreSQL: ``synchronous_commit=off``): a process crash keeps
        it, a power loss may drop it. For frequent bookkeeping whose loss is harmless; the next
        durable commit makes it durable too."""
        with self._write_lock:
            with self.full_disk_errors():
                conn = self._conn()
            self._local.after_commit = []
            try:
                with self.full_disk_errors():
                    self._begin(conn, durable)
                    try:
                        yield conn
                    except BaseException:
                        self._rollback(conn)
                        raise
                    self._commit(conn)
                after, self._local.after_commit = self._local.after_commit, None
                for fn in after:
                    try:
                        fn()
                    except Exception:  # noqa: BLE001 - the transaction committed: do not report it failed
                        log.exception("after-commit action failed")
            finally:
                self._local.after_commit = None
                if getattr(self._local, "conn", None) is conn:   # PostgreSQL drops a broken one
                    self._end(conn, durable)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once this thread's current write transaction has committed; never if it
        rolls back. For telling the world (a log line) about what the transaction did: a line
        written inside it could describe a change that never happened."""
        pending: list[Callable[[], None]] | None = getattr(self._local, "after_commit", None)
        if pending is None:
            raise RuntimeError("after_commit() needs a write transaction of this thread (Database.write)")
        pending.append(fn)

    def schema_version(self) -> int:
        with self.full_disk_errors():
            return self._version(self._conn())

    def migrate(self) -> None:
        apply_migrations(self)

    def close(self) -> None:
        """Close every thread's connection (the caller makes sure none is in use)."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


class Migratable(Protocol):
    """What :func:`apply_migrations` needs: a ``Database``, or a schema of a shared PostgreSQL one
    (``metastore.postgres.PgSchema``)."""

    path: str
    engine: str
    migrations: list[Migration]

    def schema_version(self) -> int: ...
    def write(self, durable: bool = True) -> AbstractContextManager[Any]: ...
    def _version(self, conn: Any) -> int: ...
    def _set_version(self, conn: Any, version: int) -> None: ...
    def ddl(self, stmt: str) -> str: ...


def apply_migrations(target: Migratable) -> None:
    """Run the migrations ``target`` has not run yet, each in its own write transaction."""
    current = target.schema_version()
    if current > len(target.migrations):
        raise AsrError(
            f"metadata store {target.path} has schema version {current}, newer than this "
            f"release knows ({len(target.migrations)})",
            action="Run the release that created this data directory, or a newer one.",
        )
    for version, migration in enumerate(target.migrations, start=1):
        if version <= current:
            continue
        with target.write() as conn:
            # another process may have migrated since we looked: the write lock orders us
            if target._version(conn) >= version:
                continue
            for stmt in statements(script_for(migration, target.engine)):
                conn.execute(target.ddl(stmt))
            target._set_version(conn, version)


def open_database(target: str, migrations: Sequence[Migration], *, migrate: bool = True) -> Database:
    """The metadata store at ``target``: a ``postgresql://`` (or ``postgres://``) URL, or an
    SQLite file path."""
    if target.startswith(("postgresql://", "postgres://")):
        from metastore.postgres import PgDatabase

        return PgDatabase(target, migrations, migrate=migrate)
    return Database(target, migrations, migrate=migrate)
