from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import pgserver
from tests.pgserver import PgServer


@pytest.fixture(autouse=True)
def _postgresql_installed() -> None:
    pgserver.require()


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A PostgreSQL server of the test's own, to stop and start (stopping the session's would
    pull it from under other tests); destroyed at the end."""
    pg = PgServer().init()
    try:
        yield pg
    finally:
        pg.destroy()
