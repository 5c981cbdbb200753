"""Issue 4, must-show 3: kill -9 of the agent's replication process and of cloudsvc at random
moments during initial replication and during cycles. No point ever fails verify, no
acknowledged point is lost, and replication resumes without a full re-copy."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from agent.hypervisor import LocalHypervisor
from tests.harness import Cloud
from tests.replication.fixture import MiB, protect

SEGMENT = 1 * MiB


def test_kill9_agent_and_cloud_during_replication(cloud: Cloud, tmp_path: Path) -> None:
    os.environ["ASR_REPL_SEGMENT_BYTES"] = str(SEGMENT)   # inherited by the `once` processes
    try:
        _run(cloud, tmp_path)
    finally:
        os.environ.pop("ASR_REPL_SEGMENT_BYTES", None)


def _run(cloud: Cloud, tmp_path: Path) -> None:
    rng = random.Random(4)
    p = protect(cloud, tmp_path, os_size=48 * MiB, fill=False)
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    for off in range(0, 40 * MiB, MiB):                      # incompressible content
        hv.write("vm1", 0, off, os.urandom(MiB))
    acked: list[str] = []

    def attempt(kill_cloud: bool) -> None:
        proc = p.start_once()
        time.sleep(rng.uniform(0.05, 0.6))                     # the random moment of the kill
        if kill_cloud:
            assert cloud.proc is not None
            cloud.proc.kill9()
            proc.popen.wait(120)
            cloud.start()
        else:
            proc.kill9()
        if proc.popen.returncode == 0:
            acked.append(proc.text().strip().splitlines()[-1].split('"point_id": "')[1].split('"')[0])

    # initial replication, interrupted again and again
    for trial in range(4):
        attempt(kill_cloud=trial % 2 == 1)
    total_chunks = 40 * MiB // 65536 + 1
    res = p.once()
    acked.append(res["point_id"])
    if len(acked) == 1:  # no attempt finished: the resumed copy must not start from zero
        assert res["chunks_sent"] < total_chunks, res
    # cycles with changes, interrupted
    for trial in range(4):
        for _ in range(20):
            hv.write("vm1", rng.randrange(2), rng.randrange(0, 4 * MiB, 4096), os.urandom(4096))
        attempt(kill_cloud=trial % 2 == 0)
        if trial % 2:
            acked.append(p.once()["point_id"])
    acked.append(p.once()["point_id"])
    listed = {x["point_id"] for x in p.points()}
    assert set(acked) <= listed, set(acked) - listed
    for pid in listed:
        rep = p.verify(pid)
        assert rep["ok"] is True, rep
    for i in range(len(p.disks)):
        out = p.export("latest", i, tmp_path / f"latest{i}.raw").read_bytes()
        assert out == hv.read("vm1", i, 0, len(out)), i
    hv.close()
