from __future__ import annotations

import pytest

from tests import pgserver


@pytest.fixture(autouse=True)
def _postgresql_installed() -> None:
    pgserver.require()
