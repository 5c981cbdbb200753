"""Fixtures: an Azurite blob service for the session, and one ``backend`` fixture
parametrised over every backend so the same tests run against each."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from asrclock import FakeClock
from cloudsvc.vaultstore import Backend, LocalDirBackend
from cloudsvc.vaultstore.blobbackend import BlobBackend
from tests.azurite import DEV_KEY, azurite  # noqa: F401  (the session fixture)


@pytest.fixture(params=["local", "local-buffered", "blob"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return LocalDirBackend(tmp_path / "account")  # big objects written with O_DIRECT
    if request.param == "local-buffered":
        return LocalDirBackend(tmp_path / "account", direct_io=False)
    conn = request.getfixturevalue("azurite")
    return BlobBackend("t" + uuid.uuid4().hex[:20], connection_string=conn)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
