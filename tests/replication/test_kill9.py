"""Issue 4, must-show 3: kill -9 of the agent's replication process and of cloudsvc at random
moments during initial replication and during cycles. No point ever fails verify, no
acknowledged point is lost, and replication resumes without a full re-copy.

Every kill is proved to land inside an upload: the cycle runs with the test pause
(``ASR_TEST_UPLOAD_PAUSE``, agent/replication/cycle.py), which stops it inside its PutChunks
stream after a random number of messages and says so in a file; the test kills only then
(the agent, or the cloud and then lets the agent go on into the dead stream), and checks that
the attempt ended without a point."""

from __future__ import annotations

import os
import random
from pathlib import Path

from agent.hypervisor import LocalHypervisor
from tests.harness import Cloud
from tests.replication.fixture import MiB, protect

SEGMENT = 1 * MiB                  # one PutChunks call per 1 MiB (one 2 MiB message each)
MESSAGE = 2 * MiB                  # agent/replication/cycle.py MESSAGE_BYTES


def test_kill9_agent_and_cloud_during_replication(cloud: Cloud, tmp_path: Path) -> None:
    os.environ["ASR_REPL_SEGMENT_BYTES"] = str(SEGMENT)   # inherited by the `once` processes
    try:
        _run(cloud, tmp_path)
    finally:
        os.environ.pop("ASR_REPL_SEGMENT_BYTES", None)
        os.environ.pop("ASR_TEST_UPLOAD_PAUSE", None)


def _run(cloud: Cloud, tmp_path: Path) -> None:
    rng = random.Random(4)
    p = protect(cloud, tmp_path, os_size=48 * MiB, fill=False)
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    for off in range(0, 40 * MiB, MiB):                      # incompressible content
        hv.write("vm1", 0, off, os.urandom(MiB))
    acked: list[str] = []
    kills = 0

    def attempt(kill_cloud: bool, messages: int) -> None:
        """Start a cycle, let it send ``messages`` PutChunks messages and stop inside the
        stream, kill there, and prove that no point came of it."""
        nonlocal kills
        gate = tmp_path / f"gate{kills}"
        kills += 1
        points = len(p.points())
        proc = p.start_paused_once(messages, gate)
        pid, sent = (int(x) for x in (gate / "paused").read_text().split())
        assert pid == proc.popen.pid and sent == messages
        if kill_cloud:
            assert cloud.proc is not None
            cloud.proc.kill9()
            (gate / "go").touch()                            # the agent goes on into the dead stream
            proc.popen.wait(120)
            assert proc.popen.returncode not in (0, None), proc.text()
            cloud.start()
        else:
            proc.kill9()
            assert proc.popen.returncode == -9
        assert len(p.points()) == points                     # the interrupted upload made no point

    # initial replication: 640 incompressible chunks, 20 messages of 32. Interrupted again and
    # again after a random number of messages, always fewer than are left to send (the
    # completed calls' chunks are durable, so each attempt has less to send)
    left = 40 * MiB // MESSAGE
    for trial in range(4):
        sent = rng.randrange(1, max(2, left // 2))
        attempt(kill_cloud=trial % 2 == 1, messages=sent)
        left -= sent
    total_chunks = 40 * MiB // 65536 + 1
    res = p.once()
    acked.append(res["point_id"])
    assert res["chunks_sent"] < total_chunks, res             # the resumed copy did not start from zero
    # cycles with changes (50 new blocks: 2 messages), interrupted between their messages
    for trial in range(4):
        for block in rng.sample(range(640), 40):
            hv.write("vm1", 0, block * 65536, os.urandom(65536))
        for block in rng.sample(range(64), 10):
            hv.write("vm1", 1, block * 65536, os.urandom(65536))
        assert 50 * 65536 > MESSAGE                           # so a pause after one message is inside
        attempt(kill_cloud=trial % 2 == 0, messages=1)
        if trial % 2:
            acked.append(p.once()["point_id"])
    acked.append(p.once()["point_id"])
    assert kills == 8
    listed = {x["point_id"] for x in p.points()}
    assert set(acked) <= listed, set(acked) - listed
    for pid in listed:
        rep = p.verify(pid)
        assert rep["ok"] is True, rep
    for i in range(len(p.disks)):
        out = p.export("latest", i, tmp_path / f"latest{i}.raw").read_bytes()
        assert out == hv.read("vm1", i, 0, len(out)), i
    hv.close()
