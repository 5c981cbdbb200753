"""The vault store's metadata in SQLite: chunk index, packs, recovery points, sessions, pins.

Everything another process would need lives here, not in memory (the one exception is the
not-yet-sealed pack a process is filling, which nothing has acknowledged). The database is
the project's one SQLite wrapper (``metastore.Database``): WAL, ``synchronous=FULL`` (a
committed point row survives power loss, which is what lets the cloud acknowledge a point
as soon as ``commit_point`` returns), one writer lock, ``BEGIN IMMEDIATE``, versioned
migrations. A full disk is ``DiskFull`` (ASR-0061); any other SQLite failure is a
``StorageError`` naming the index, never a raw ``sqlite3`` error.

Pack states: ``writing`` (row made before the put, so an interrupted write can be found and
removed), ``live``, ``deleting`` (its chunk rows are gone; the object may still exist).

Pins: a row per reader or failover that needs a point to stay (see ``VaultStore.pin``).
``expires_at`` NULL means held until released by name; otherwise a lease its holder renews.
A point is deleted by retention only in a transaction that first finds no unexpired pin.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from asrerrors import AsrError, NotFound, StorageError
from cloudsvc.vaultstore.packfile import PackEntry
from cloudsvc.vaultstore.records import DiskInfo, PinInfo, PointInfo
from durablefile import fsync_dir
from metastore.database import Conn, Database, DatabaseError, Migration
from portablefile import locked

if TYPE_CHECKING:
    from metastore.postgres import PgDatabase

# Released entries are never edited. Version 1 is the schema that existed before migrations
# (hence IF NOT EXISTS: a store made then has user_version 0 and these tables already).
MIGRATIONS: list[Migration] = [
    # PostgreSQL: "offset" is a reserved word there, quoted (the SQL below quotes it for both)
    {"sqlite": """
    CREATE TABLE IF NOT EXISTS packs (
        name TEXT PRIMARY KEY, size INTEGER NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS chunks (
        id BLOB PRIMARY KEY, kind INTEGER NOT NULL, pack TEXT NOT NULL,
        offset INTEGER NOT NULL, length INTEGER NOT NULL, hash BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks (pack);
    CREATE TABLE IF NOT EXISTS points (
        point_id TEXT PRIMARY KEY, vm_id TEXT NOT NULL, created_at REAL NOT NULL, kind TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS points_by_vm ON points (vm_id, created_at);
    CREATE TABLE IF NOT EXISTS point_disks (
        point_id TEXT NOT NULL REFERENCES points (point_id) ON DELETE CASCADE,
        disk_index INTEGER NOT NULL, virtual_size INTEGER NOT NULL, fanout INTEGER NOT NULL,
        root BLOB NOT NULL, PRIMARY KEY (point_id, disk_index)
    );
    CREATE TABLE IF NOT EXISTS sessions (
        session_id TEXT PRIMARY KEY, vm_id TEXT NOT NULL, opened_at REAL NOT NULL,
        touched_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS session_chunks (
        session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
        id BLOB NOT NULL, PRIMARY KEY (session_id, id)
    ) WITHOUT ROWID
    """,
     "postgresql": """
    CREATE TABLE packs (
        name TEXT PRIMARY KEY, size INTEGER NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE TABLE chunks (
        id BLOB PRIMARY KEY, kind INTEGER NOT NULL, pack TEXT NOT NULL,
        "offset" INTEGER NOT NULL, length INTEGER NOT NULL, hash BLOB NOT NULL
    );
    CREATE INDEX chunks_by_pack ON chunks (pack);
    CREATE TABLE points (
        point_id TEXT PRIMARY KEY, vm_id TEXT NOT NULL, created_at REAL NOT NULL, kind TEXT NOT NULL
    );
    CREATE INDEX points_by_vm ON points (vm_id, created_at);
    CREATE TABLE point_disks (
        point_id TEXT NOT NULL REFERENCES points (point_id) ON DELETE CASCADE,
        disk_index INTEGER NOT NULL, virtual_size INTEGER NOT NULL, fanout INTEGER NOT NULL,
        root BLOB NOT NULL, PRIMARY KEY (point_id, disk_index)
    );
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY, vm_id TEXT NOT NULL, opened_at REAL NOT NULL,
        touched_at REAL NOT NULL
    );
    CREATE TABLE session_chunks (
        session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
        id BLOB NOT NULL, PRIMARY KEY (session_id, id)
    )
    """},
    # Pins; and session protection looked up by id (the collector's "kept" test, per blob).
    """
CREATE TABLE pins (
    pin_id TEXT PRIMARY KEY, point_id TEXT NOT NULL, holder TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL
);
CREATE INDEX pins_by_point ON pins (point_id);
CREATE INDEX pins_by_holder ON pins (holder);
CREATE INDEX session_chunks_by_id ON session_chunks (id)
""",
    # Protection by age (see the collector's module doc): every pack gets a number from one
    # counter when it is sealed; a session remembers the counter when it opens. A pack
    # numbered above an open session's number was sealed after that session began.
    """
ALTER TABLE packs ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
CREATE TABLE pack_seq (value BIGINT NOT NULL);
INSERT INTO pack_seq (value) VALUES (0)
""",
]
_BATCH = 500  # ids per IN (...) query, well under SQLite's variable limit
# Pins (aliased p) in force at the time bound to the placeholder.
_PIN_HOLDS = "(p.expires_at IS NULL OR p.expires_at > ?)"


@dataclass(frozen=True)
class Location:
    kind: int
    pack: str
    offset: int
    length: int
    hash: bytes


@dataclass(frozen=True)
class PackRow:
    name: str
    size: int
    state: str
    created_at: float
    seq: int = 0   # from the index's one counter when the pack was sealed (protection by age)


@dataclass(frozen=True)
class PgIndex:
    """A store's index as one schema of a PostgreSQL database: where a blob account's index
    lives when the metadata is in PostgreSQL, so that every cloud service process, on any
    machine, shares it (an SQLite file is shared only by processes of one machine)."""

    url: str
    schema: str
    # the database whose connections it uses, shared by the process's indexes (``PgSchema``);
    # None: a database of its own, closed with the index
    database: PgDatabase | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        from metastore.postgres import display_url

        return f"{display_url(self.url)} (schema {self.schema})"


# Where a store's index lives: an SQLite file (its path), or a PostgreSQL schema.
IndexLocation = str | PgIndex


def pg_schema(vault_id: str, storage: str) -> str:
    """The schema of an account's index: readable, and distinct for names that differ only in
    case or punctuation (the digest), within PostgreSQL's 63 bytes."""
    readable = re.sub(r"[^a-z0-9]", "_", storage.lower())[:20]
    digest = hashlib.blake2b(f"{vault_id}/{storage}".encode(), digest_size=4).hexdigest()
    return f"ix_{re.sub(r'[^a-z0-9]', '_', vault_id.lower())[:16]}_{readable}_{digest}"


def _engine(location: IndexLocation, migrate: bool = True) -> SqlEngine:
    """The database of an index: an SQLite file; a schema of the process's shared PostgreSQL
    database (``location.database``: closing it closes nothing); or a PostgreSQL database of its
    own. ``migrate=False``: as it is (a reader, or a teardown: never made by being looked at)."""
    migrations = MIGRATIONS if migrate else []
    if not isinstance(location, PgIndex):
        return Database(location, migrations, migrate=migrate)
    from metastore.postgres import PgDatabase, PgSchema

    if location.database is not None:
        return PgSchema(location.database, location.schema, migrations, migrate=migrate)
    return PgDatabase(location.url, migrations, migrate=migrate, schema=location.schema)


@dataclass(frozen=True)
class StoreFigures:
    """What a metrics scrape reports of a store: its pack bytes and its open upload sessions
    (a session left by a dead agent defers the collection of newer packs until it expires)."""

    pack_bytes: int
    open_sessions: int
    oldest_session_opened_at: float | None


_FIGURES = ("SELECT (SELECT COALESCE(SUM(size), 0) FROM packs), (SELECT COUNT(*) FROM sessions), "
            "(SELECT MIN(opened_at) FROM sessions)")


def _figures(row: Sequence[Any]) -> StoreFigures:
    return StoreFigures(int(row[0]), int(row[1]), None if row[2] is None else float(row[2]))


def figures_at(location: IndexLocation) -> StoreFigures | None:
    """The figures of the index at ``location``, read without opening a store (read-only: it
    never creates or migrates an index; a metrics scrape must not resurrect a store a vault
    teardown just destroyed). None when there is no such index."""
    if isinstance(location, PgIndex):
        db = _engine(location, migrate=False)
        try:
            return _figures(db.query(_FIGURES)[0])
        except DatabaseError + (AsrError,):   # no such schema (yet, or any more), or no server
            return None
        finally:
            db.close()
    path = location
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return None
    try:
        return _figures(conn.execute(_FIGURES).fetchone())
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _batches(ids: list[bytes]) -> Iterator[list[bytes]]:
    for i in range(0, len(ids), _BATCH):
        yield ids[i : i + _BATCH]


def destroy_index(location: IndexLocation) -> None:
    """Delete an index: its SQLite files, or its PostgreSQL schema. Idempotent."""
    if isinstance(location, PgIndex):
        db = _engine(location, migrate=False)
        try:
            with db.write() as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {location.schema} CASCADE")
        except DatabaseError as exc:
            raise StorageError(f"cannot delete the vault store's index {location}: {exc}") from exc
        finally:
            db.close()
        return
    for suffix in ("", "-wal", "-shm", "-journal", ".collector.lock"):
        try:
            os.unlink(location + suffix)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete the vault store's index {location}{suffix}: {exc}") from exc
    fsync_dir(os.path.dirname(location) or ".")


class SqlEngine(Protocol):
    """What the index needs of its database: a ``Database``, or a ``PgSchema`` of a shared one."""

    path: str

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]: ...
    def write(self, durable: bool = True) -> AbstractContextManager[Conn]: ...
    def connection(self) -> Conn: ...
    def full_disk_errors(self) -> AbstractContextManager[None]: ...
    def ddl(self, stmt: str) -> str: ...
    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]: ...
    def close(self) -> None: ...


class IndexDb:
    def __init__(self, location: IndexLocation) -> None:
        self.location = location
        self.path = str(location)   # what messages name
        with self._errors():
            self.database = _engine(location)

    def adopt(self, path: str) -> int:
        """Copy the SQLite index at ``path`` into this (PostgreSQL) index, in one transaction, if
        this one holds nothing yet; returns the rows copied. How a blob account indexed before its
        index followed the metadata into PostgreSQL keeps its points: the caller renames the file
        afterwards, and a crash before that only makes the next call find this index not empty."""
        tables = {"packs": "name, size, state, created_at, seq", "chunks": 'id, kind, pack, "offset", length, hash',
                  "points": "point_id, vm_id, created_at, kind",
                  "point_disks": "point_id, disk_index, virtual_size, fanout, root",
                  "sessions": "session_id, vm_id, opened_at, touched_at, seq", "session_chunks": "session_id, id",
                  "pins": "pin_id, point_id, holder, created_at, expires_at"}
        source = Database(path, MIGRATIONS)   # migrated first: an old file may lack pins
        copied = 0
        try:
            with self.tx() as conn:
                if conn.execute("SELECT 1 FROM packs UNION ALL SELECT 1 FROM points LIMIT 1").fetchone():
                    return 0
                for table, columns in tables.items():   # parents first: the foreign keys hold
                    # streamed: an index of millions of chunk rows is never all in memory
                    rows = iter(source.connection().execute(f"SELECT {columns} FROM {table}"))
                    copy_rows = getattr(conn, "copy_rows", None)   # PostgreSQL's COPY
                    if copy_rows is not None:
                        copied += int(copy_rows(table, columns, rows))
                        continue
                    marks = ", ".join("?" * len(columns.split(",")))
                    while batch := [tuple(r) for r in itertools.islice(rows, 20_000)]:
                        conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", batch)
                        copied += len(batch)
                # the counter too: a copied session's number must stay below every pack sealed after
                conn.execute("UPDATE pack_seq SET value = ?", (source.query("SELECT value FROM pack_seq")[0][0],))
        finally:
            source.close()
        return copied

    def exists(self) -> bool:
        """Whether the index is still there (another process may have destroyed the store)."""
        if isinstance(self.location, PgIndex):
            return bool(self.query("SELECT 1 FROM pg_namespace WHERE nspname = ?", (self.location.schema,)))
        return os.path.exists(self.location)

    @contextmanager
    def collector_lock(self) -> Iterator[None]:
        """Exclusive across every process sharing the index, and released with a holder that
        dies: a lock file beside an SQLite index; a session advisory lock on this thread's
        connection to PostgreSQL (gone with the connection)."""
        if not isinstance(self.location, PgIndex):
            with locked(self.location + ".collector.lock"):
                yield
            return
        from metastore.postgres import lock_key

        key = lock_key(self.location.schema + ".collector")
        with self._errors():
            self.database.query("SELECT pg_advisory_lock(?)", (key,))
        try:
            yield
        finally:
            with suppress(*DatabaseError, AsrError):   # the connection is gone, and the lock with it
                self.database.query("SELECT pg_advisory_unlock(?)", (key,))

    def close(self) -> None:
        self.database.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except DatabaseError as exc:  # a full disk is already DiskFull, no server MetadataUnavailable
            raise StorageError(
                f"the vault store's index {self.path} failed: {exc}",
                causes=("The index database is damaged, or another process holds it locked.",),
                action="Check the service log; if the index is damaged, rebuild it from the packs "
                       "(VaultStore.rebuild_index keeps the recovery points).",
            ) from exc

    @contextmanager
    def tx(self, durable: bool = True) -> Iterator[Conn]:
        """One short write transaction (BEGIN IMMEDIATE, so a second writer waits up front
        instead of failing at commit time). ``durable=False``: see ``Database.write``."""
        with self._errors(), self.database.write(durable) as conn:
            yield conn

    def query(self, sql: str, args: Iterable[object] = ()) -> list[Any]:
        with self._errors():
            return self.database.query(sql, tuple(args))

    def temp_table(self, name: str, columns: str) -> None:
        """(Re)make the TEMP table ``name`` on this thread's connection (see ``fill_temp``)."""
        self.drop_temp(name)
        self.fill_temp(self.database.ddl(f"CREATE TEMP TABLE {name} ({columns})"), [()])

    def drop_temp(self, name: str) -> None:
        self.fill_temp(f"DROP TABLE IF EXISTS {name}", [()])

    def fill_temp(self, sql: str, rows: Iterable[tuple[object, ...]]) -> int:
        """Run ``sql`` for each row on this thread's connection, outside any write
        transaction: for TEMP tables (per connection, so the whole use must stay on one
        thread), which need no lock on the shared database. Returns the rows changed."""
        with self._errors(), self.database.full_disk_errors():
            return int(self.database.connection().executemany(sql, rows).rowcount)

    # --- chunks -----------------------------------------------------------------------
    def present(self, ids: Iterable[bytes]) -> set[bytes]:
        out: set[bytes] = set()
        for batch in _batches(list(ids)):
            where, args = self.database.in_list("id", batch)
            rows = self.query(f"SELECT id FROM chunks WHERE {where}", args)
            out.update(r[0] for r in rows)
        return out

    def pack_seqs(self, ids: Iterable[bytes]) -> dict[bytes, int]:
        """The number of the pack each stored id is in (ids not stored are left out)."""
        out: dict[bytes, int] = {}
        for batch in _batches(list(ids)):
            where, args = self.database.in_list("c.id", batch)
            rows = self.query(f"SELECT c.id, p.seq FROM chunks c JOIN packs p ON p.name = c.pack WHERE {where}", args)
            out.update((r[0], int(r[1])) for r in rows)
        return out

    def lookup(self, ids: Iterable[bytes]) -> dict[bytes, Location]:
        out: dict[bytes, Location] = {}
        for batch in _batches(list(ids)):
            where, args = self.database.in_list("id", batch)
            rows = self.query(f'SELECT id, kind, pack, "offset", length, hash FROM chunks WHERE {where}', args)
            for r in rows:
                out[r[0]] = Location(r[1], r[2], r[3], r[4], r[5])
        return out

    def chunks_in_pack(self, pack: str) -> list[tuple[bytes, Location]]:
        rows = self.query(
            'SELECT id, kind, pack, "offset", length, hash FROM chunks '
            'WHERE pack = ? ORDER BY "offset"',
            (pack,),
        )
        return [(r[0], Location(r[1], r[2], r[3], r[4], r[5])) for r in rows]

    # --- packs ------------------------------------------------------------------------
    def pack_begin(self, name: str, size: int, now: float) -> None:
        """The ``writing`` row of a sealed pack, numbered from the counter *after* its content
        was fixed: a pack holding a blob a session sent is numbered above that session. A
        pack sealed again with the same content (the same name) takes the new number: a
        younger number only defers its collection."""
        with self.tx() as c:
            seq = self.next_pack_seq(c)
            c.execute(
                "INSERT INTO packs (name, size, state, created_at, seq) VALUES (?, ?, 'writing', ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                (name, size, now, seq),
            )

    @staticmethod
    def next_pack_seq(conn: Conn) -> int:
        """Inside the caller's transaction; the update's row lock orders concurrent sealers of
        other processes (PostgreSQL), and the number never goes down (packs are forgotten)."""
        conn.execute("UPDATE pack_seq SET value = value + 1")
        return int(conn.execute("SELECT value FROM pack_seq").fetchone()[0])

    @staticmethod
    def pack_commit(conn: Conn, name: str, entries: list[PackEntry], replace: bool) -> None:
        """Index a durable pack's entries (inside the caller's transaction). ``replace`` moves
        existing ids to this pack (repacking); otherwise the first stored copy wins (a group
        frame's member stored before keeps its row). Entries may share a location: a group
        frame's members, one row each."""
        conflict = ('(id) DO UPDATE SET kind = excluded.kind, pack = excluded.pack, "offset" = excluded."offset", '
                    "length = excluded.length, hash = excluded.hash") if replace else "DO NOTHING"
        conn.executemany(
            f'INSERT INTO chunks (id, kind, pack, "offset", length, hash) VALUES (?, ?, ?, ?, ?, ?) '
            f"ON CONFLICT {conflict}",
            [(e.id, e.kind, name, e.offset, e.length, e.hash) for e in entries],
        )
        conn.execute("UPDATE packs SET state = 'live' WHERE name = ?", (name,))

    def packs(self, state: str | None = None) -> list[PackRow]:
        if state is None:
            rows = self.query("SELECT name, size, state, created_at, seq FROM packs ORDER BY name")
        else:
            rows = self.query(
                "SELECT name, size, state, created_at, seq FROM packs WHERE state = ? ORDER BY name",
                (state,),
            )
        return [PackRow(*r) for r in rows]

    def pack_forget(self, name: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM chunks WHERE pack = ?", (name,))
            c.execute("DELETE FROM packs WHERE name = ?", (name,))

    def total_pack_bytes(self) -> int:
        return int(self.query("SELECT COALESCE(SUM(size), 0) FROM packs")[0][0])

    def figures(self) -> StoreFigures:
        return _figures(self.query(_FIGURES)[0])

    # --- sessions ---------------------------------------------------------------------
    def session_open(self, session_id: str, vm_id: str, now: float) -> None:
        """A session numbered with the pack counter as it is now: every pack sealed after
        this (so every pack that can hold a blob the session sends) is numbered above it."""
        with self.tx() as c:
            c.execute(
                "INSERT INTO sessions (session_id, vm_id, opened_at, touched_at, seq) "
                "SELECT ?, ?, ?, ?, value FROM pack_seq",
                (session_id, vm_id, now, now),
            )

    def session_seq(self, session_id: str) -> int | None:
        rows = self.query("SELECT seq FROM sessions WHERE session_id = ?", (session_id,))
        return int(rows[0][0]) if rows else None

    def oldest_session_seq(self) -> int | None:
        """The lowest number of an open session: packs numbered above it are kept by age."""
        rows = self.query("SELECT MIN(seq) FROM sessions")
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def session_touch(self, session_id: str, now: float) -> None:
        with self.tx(durable=False) as c:
            c.execute("UPDATE sessions SET touched_at = ? WHERE session_id = ?", (now, session_id))

    def session_vm(self, session_id: str) -> str | None:
        rows = self.query("SELECT vm_id FROM sessions WHERE session_id = ?", (session_id,))
        return rows[0][0] if rows else None

    def session_opened_at(self, session_id: str) -> float | None:
        rows = self.query("SELECT opened_at FROM sessions WHERE session_id = ?", (session_id,))
        return float(rows[0][0]) if rows else None

    def session_protect(self, session_id: str, ids: Iterable[bytes], now: float) -> None:
        """Protect ``ids`` for the session against garbage collection. Committed without an
        fsync (it runs on every uploaded batch): a process crash keeps it (WAL), only a power
        loss can drop it, and then the point's commit finds the chunks a collection removed
        absent and refuses, so the agent uploads them again. The next durable commit makes
        it durable anyway."""
        rows = [(session_id, i) for i in ids]
        with self.tx(durable=False) as c:
            c.execute("UPDATE sessions SET touched_at = ? WHERE session_id = ?", (now, session_id))
            c.executemany("INSERT INTO session_chunks (session_id, id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                          rows)

    def session_close(self, session_id: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))

    def sessions_idle_since(self, cutoff: float) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT session_id FROM sessions WHERE touched_at < ?", (cutoff,)
        )]

    # --- points -----------------------------------------------------------------------
    def point_insert(self, p: PointInfo, session_id: str | None = None) -> None:
        """The point's rows; with ``session_id``, only while that session is still open, in the
        same transaction: a session the collector expired no longer kept its packs by age, so
        a point made of them might name blobs already collected (the commit then refuses)."""
        with self.tx() as c:
            if session_id is not None and c.execute(
                    "SELECT 1 FROM sessions WHERE session_id = ?", (session_id,)).fetchone() is None:
                raise NotFound(f"upload session {session_id} expired before its point was recorded",
                               causes=("The cycle was idle for longer than the vault store's session "
                                       "lifetime, so its uploads were no longer kept from collection.",),
                               action="Begin a new cycle; what was uploaded and is still stored is not sent again.")
            c.execute(
                "INSERT INTO points (point_id, vm_id, created_at, kind) VALUES (?, ?, ?, ?)",
                (p.point_id, p.vm_id, p.created_at, p.kind),
            )
            c.executemany(
                "INSERT INTO point_disks (point_id, disk_index, virtual_size, fanout, root) "
                "VALUES (?, ?, ?, ?, ?)",
                [(p.point_id, d.disk_index, d.virtual_size, d.fanout, d.root) for d in p.disks],
            )

    def _points(self, where: str, args: tuple[object, ...]) -> list[PointInfo]:
        rows = self.query(
            f"SELECT point_id, vm_id, created_at, kind FROM points {where} "
            "ORDER BY created_at, point_id",
            args,
        )
        out = []
        for pid, vm, created, kind in rows:
            disks = tuple(
                DiskInfo(*d)
                for d in self.query(
                    "SELECT disk_index, virtual_size, fanout, root FROM point_disks "
                    "WHERE point_id = ? ORDER BY disk_index",
                    (pid,),
                )
            )
            out.append(PointInfo(pid, vm, created, kind, disks))
        return out

    def point(self, point_id: str) -> PointInfo | None:
        found = self._points("WHERE point_id = ?", (point_id,))
        return found[0] if found else None

    def points(self, vm_id: str | None = None) -> list[PointInfo]:
        if vm_id is None:
            return self._points("", ())
        return self._points("WHERE vm_id = ?", (vm_id,))

    def point_ids(self) -> set[str]:
        return {r[0] for r in self.query("SELECT point_id FROM points")}

    @staticmethod
    def point_delete(conn: Conn, point_id: str) -> bool:
        """Delete a point row (inside the caller's transaction); False if there was none."""
        return conn.execute("DELETE FROM points WHERE point_id = ?", (point_id,)).rowcount > 0

    # --- pins -------------------------------------------------------------------------
    @staticmethod
    def pin_holders(conn: Conn, point_id: str, now: float) -> list[str]:
        """Holders of the pins in force on a point (inside the caller's transaction, so that
        a delete that checks this cannot race with a pin being taken)."""
        rows = conn.execute(
            f"SELECT holder FROM pins p WHERE p.point_id = ? AND {_PIN_HOLDS} ORDER BY holder",
            (point_id, now),
        ).fetchall()
        return [r[0] for r in rows]

    @staticmethod
    def pin_insert(conn: Conn, pin: PinInfo, now: float) -> None:
        conn.execute(
            "INSERT INTO pins (pin_id, point_id, holder, created_at, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (pin_id) DO UPDATE SET point_id = excluded.point_id, holder = excluded.holder, "
            "created_at = excluded.created_at, expires_at = excluded.expires_at",
            (pin.pin_id, pin.point_id, pin.holder, now, pin.expires_at),
        )

    def pin_delete(self, pin_id: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM pins WHERE pin_id = ?", (pin_id,))

    def pins_release(self, holder: str) -> int:
        with self.tx() as c:
            return int(c.execute("DELETE FROM pins WHERE holder = ?", (holder,)).rowcount)

    def pins(self, now: float, point_id: str | None = None) -> list[PinInfo]:
        """The pins in force at ``now`` (of one point, or all)."""
        args: list[object]
        where, args = f"WHERE {_PIN_HOLDS}", [now]
        if point_id is not None:
            where += " AND p.point_id = ?"
            args.append(point_id)
        rows = self.query(
            f"SELECT pin_id, point_id, holder, expires_at FROM pins p {where} ORDER BY point_id, holder", args
        )
        return [PinInfo(*r) for r in rows]

    def pins_expire(self, now: float) -> int:
        """Forget pins whose lease ran out (their holder died without releasing them)."""
        with self.tx() as c:
            return int(c.execute("DELETE FROM pins WHERE expires_at IS NOT NULL AND expires_at <= ?",
                                 (now,)).rowcount)
