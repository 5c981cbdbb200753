"""Issue 10, must-show 1: split brain after an unplanned failover is impossible.

The agent hv01 is killed, `asr failover unplanned db01 --shutdown-source` goes ahead without
the site (the shutdown is skipped), the failover is committed, and the agent comes back. It
must not become a second primary: its attempts are fenced (ASR-0044 in its log), no new point
appears over three copy intervals, `asr vm show` shows the failed-over state and the stale
on-premises copy, `point export latest` equals the recovered VM's disks, and the agent
refuses to start the VM. Failback (reverse replication) is the way back: it ships exactly the
blocks that differ — here the writes the site made after its last acknowledged point, which
were lost with it — and forward replication resumes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.controlplane.sitefix import agent_vm
from tests.failover.fixture import asr_job, compare, recovered, vm_state
from tests.harness import Cloud, wait_for
from tests.replication.fixture import protect

COPY_S = 30
LOST = [(0, 2 * 65536, 3 * 65536, 0x6e), (1, 5 * 65536, 65536, 0x6f)]   # 4 blocks the site never shipped


def test_returning_primary_is_fenced_and_failback_ships_only_the_difference(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path, start="now")          # the agent daemon replicates every 30 s by itself
    first = wait_for(lambda: p.points(), 90, what="the first point from the agent's own schedule")
    n = len(first)
    # right after a point commits, write blocks and kill the host before its next cycle ships them
    wait_for(lambda: len(p.points()) > n, 60, what="a second scheduled point")
    for index, offset, length, pattern in LOST:
        p.write(index, offset, length, pattern)
    agent = p.site.agents["hv01"]
    agent.kill9()
    before = p.points()
    latest = before[-1]["point_id"]

    job = asr_job(p, "failover", "unplanned", p.vm, "--shutdown-source")
    assert job["state"] == "Succeeded", job
    assert "did not answer" in job["tasks"][0]["output"]
    assert asr_job(p, "failover", "commit", p.vm)["state"] == "Succeeded"
    [rvm] = recovered(p)
    assert rvm["point_id"] == latest
    recovered_disks = [Path(d["path"]) for d in sorted(rvm["disks"], key=lambda d: d["index"])]

    # the old primary returns
    agent = p.site.start_agent("hv01")
    wait_for(lambda: "ASR-0044" in agent.text(), 60, what="the returning agent to be fenced (ASR-0044 in its log)")
    st = vm_state(p)
    assert st["protection_state"] == "FailoverCommitted" and st["active_location"] == "Recovery", st
    assert st["primary_copy"] == "Stale" and "hv01" in st["primary_copy_detail"], st
    assert st["replication_health"] != "Normal" and not st.get("rpo_seconds"), st
    assert "failback" in st["allowed_operations"]

    # no new point over three copy intervals (retention may thin the earlier ones: two points
    # of one 30-s interval keep only the later, and the agent's first two often share one)
    deadline = time.monotonic() + 3 * COPY_S + 5
    while time.monotonic() < deadline:
        now = [x["point_id"] for x in p.points()]
        assert now[-1] == latest and set(now) <= {x["point_id"] for x in before}, (now, before)
        time.sleep(1)

    # latest is still what the recovered VM was made from, byte for byte
    for i, disk in enumerate(recovered_disks):
        out = p.export("latest", i, tmp_path / f"latest-{i}.raw")
        assert compare(out, "raw", disk, "vpc").returncode == 0, i

    # the stale copy may not start
    res = agent_vm(p.site, "hv01", "start", p.vm)
    assert res.returncode == 44 and "ASR-0044" in res.stderr, (res.returncode, res.stderr)
    assert '"Off"' in agent_vm(p.site, "hv01", "show", p.vm, "--json").stdout

    events = cloud.asr_json("event", "list", "--vault", "contoso", "--vm", p.vm)
    assert any(e["code"] == "EVT-0002" and "on-premises copy is fenced" in e["message"] for e in events), events

    # reverse replication is the way back, and ships only the blocks that differ
    job = asr_job(p, "failover", "planned", p.vm, "--direction", "to-primary")
    assert job["state"] == "Succeeded", job
    out = job["tasks"][-1]["output"]
    got = re.search(r"received (\d+) differing blocks", out)
    assert got and int(got.group(1)) == sum(length // 65536 for _, _, length, _ in LOST), out
    for (img, fmt), disk in zip(p.disks, recovered_disks, strict=True):
        assert compare(img, fmt, disk, "vpc").returncode == 0
    assert asr_job(p, "failover", "commit", p.vm)["state"] == "Succeeded"
    st = vm_state(p)
    assert st["protection_state"] == "Protected" and st["primary_copy"] == "Active", st
    # forward replication resumes on the agent's own schedule
    wait_for(lambda: len(p.points()) > len(before), 3 * COPY_S, what="a new point after failback")
