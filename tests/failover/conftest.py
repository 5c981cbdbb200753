from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Cloud, Procs


@pytest.fixture
def cloud(procs: Procs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    # an unplanned failover's "try to shut the source down" gives up after 3 s in tests
    monkeypatch.setenv("ASR_FAILOVER_SHUTDOWN_TIMEOUT", "3")
    return Cloud(procs, tmp_path / "cloud").start()
