"""``Database.in_list`` on SQLite: the rows it finds, and how many statement texts it makes.

Every connection caches up to 128 prepared statements; a text per list length let 64 worker
threads' caches fill with statements of hundreds of parameters, and the cloud service's memory
grew under load (docs/benchmarks.md, "Where the cloud service's memory grew")."""

from __future__ import annotations

import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metastore.database import Database

_MIGRATIONS = ["CREATE TABLE t (id BLOB PRIMARY KEY, n INTEGER NOT NULL)"]


def test_a_query_shape_has_a_few_statement_texts_whatever_the_lengths(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "m.db"), _MIGRATIONS)
    try:
        texts = {db.in_list("id", [b"x"] * n)[0] for n in range(1, 501)}
        assert len(texts) <= 10, len(texts)
    finally:
        db.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(present=st.sets(st.integers(0, 999), max_size=40),
       asked=st.lists(st.integers(0, 1999), min_size=1, max_size=600))
def test_in_list_finds_exactly_the_rows_asked_for(tmp_path: Path, present: set[int], asked: list[int]) -> None:
    db = Database(str(tmp_path / f"{uuid.uuid4().hex}.db"), _MIGRATIONS)
    try:
        with db.write() as conn:
            conn.executemany("INSERT INTO t (id, n) VALUES (?, ?)", [(i.to_bytes(2, "big"), i) for i in present])
        where, args = db.in_list("id", [i.to_bytes(2, "big") for i in asked])
        found = {r[0] for r in db.query(f"SELECT n FROM t WHERE {where}", args)}
        assert found == present & set(asked)
    finally:
        db.close()
