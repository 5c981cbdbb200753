"""``python -m agent.replication once``: the connection is opened before the cycle and
reported apart from it (a daemon's cycles find their connections open), and a cloud that
cannot be reached still fails the cycle with an error that names it."""

from __future__ import annotations

import time
from pathlib import Path

from tests.harness import Cloud
from tests.replication.fixture import protect


def test_once_reports_its_connection_apart_from_the_cycle(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    res = p.once()
    assert res["point_id"] and res["modes"] == ["initial", "initial"]
    assert res["connect_s"] >= 0
    # the cycle's phases are parts of its seconds; the connection is not among them
    assert set(res["phases"]) == {"begin", "snapshot", "transfer", "commit", "release"}
    assert sum(res["phases"].values()) <= res["seconds"] + 1e-6


def test_once_against_a_stopped_cloud_fails_and_names_it(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    p.once()
    p.write(0, 0, 4096, 0x31)
    endpoint = cloud.endpoint
    cloud.stop()
    t = time.monotonic()
    res = p.once(check=False)
    assert res["returncode"] != 0
    assert "ASR-" in res["stderr"] and endpoint in res["stderr"], res["stderr"]
    # the wait for a connection that does not open is bounded (then the cycle names the error)
    assert time.monotonic() - t < 120
