from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.azurite import azurite  # noqa: F401  (session fixture for every test directory)
from tests.harness import Cloud, Procs


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
