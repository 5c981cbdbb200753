from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pgserver
from tests.azurite import azurite  # noqa: F401  (session fixture for every test directory)
from tests.harness import Cloud, Procs


@pytest.fixture(scope="session", autouse=True)
def postgres_server() -> Iterator[pgserver.PgServer | None]:
    """ASR_TEST_DATABASE=postgresql: one PostgreSQL for the session (each Cloud gets a fresh
    database of it). Tests of PostgreSQL itself (tests/metastore) start it in any pass; whoever
    started it, it stops when the session ends."""
    try:
        yield pgserver.server() if pgserver.wanted() else None
    finally:
        pgserver.shutdown()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


@pytest.fixture
def cloud(procs: Procs, tmp_path: Path) -> Cloud:
    return Cloud(procs, tmp_path / "cloud").start()
