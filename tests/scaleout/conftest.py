from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metastore.database import Database
from tests.scaleout.fixture import metadata_db


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A migrated metadata database with vault v1, closed after the test (either engine)."""
    d = metadata_db(tmp_path / "metadata.db")
    try:
        yield d
    finally:
        d.close()
