from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Cloud, Procs


@pytest.fixture
def cloud(procs: Procs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    # failover's "try to shut the source down" and "give the primary back" give up after 3 s
    monkeypatch.setenv("ASR_FAILOVER_SHUTDOWN_TIMEOUT", "3")
    monkeypatch.setenv("ASR_FAILOVER_GRANT_TIMEOUT", "3")
    monkeypatch.setenv("ASR_TEARDOWN_SITE_TIMEOUT", "3")
    return Cloud(procs, tmp_path / "cloud").start()
