"""Issue 11, must-show 5: site-to-site replication survives the loss of either host and a
partition between the two, through real daemons (tests/sitetosite/fixture.py: one cloud
service, providers prov-a and prov-b, agents hv01 — the primary — hv11 holding the replica,
and hv12).

- kill -9 mid-transfer, of the recovery agent hv11 in one run and of the primary's sender (a
  cycle's process, paused inside its upload by ``ASR_TEST_UPLOAD_PAUSE``) in the other: the
  next cycle is incremental and sends only what was not durable yet, every point the primary
  had acknowledged is still listed by the vault and kept by hv11, and the replica disks
  equal the source;
- a partition between the hosts while both still reach the cloud: hv11 runs in a network
  namespace with two veth links to the root namespace (tests/netns.py), one to the cloud
  service and its provider, the other carrying the primary's connections to its
  ``replica_listen``; cutting only the second is the partition. The primary's scheduled
  cycles fail across it, the replica's health that hv11 reports goes Critical, and once the
  link heals the next scheduled cycle is incremental, loses no point, and health is Normal.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durablefile import write_atomic
from tests.harness import Cloud, Proc, Procs, wait_for
from tests.netns import Netns
from tests.replication.fixture import MiB
from tests.sitetosite.fixture import TwoSites

KiB = 1024
FRAME_MAX = 64 * KiB + 256     # a 64 KiB block's frame: incompressible data plus header and tag
COPY_S = 30                    # the policy's copy frequency (TwoSites.protect)


class Clock:
    """The daemons' injected clock (``ASR_FAKE_CLOCK_FILE``), moved only by the test. Each
    point is made a copy interval after the previous one: retention keeps one point per
    interval of the first hour, and these tests mean to find every point kept."""

    def __init__(self, path: Path, now: float = 1_780_000_000.0) -> None:
        self.path = path
        self.now = now
        write_atomic(path, str(now).encode())

    def advance(self, seconds: float) -> None:
        self.now += seconds
        write_atomic(self.path, str(self.now).encode())   # atomic: a daemon never reads half a time


def replica_points(s: TwoSites) -> list[str]:
    """The points hv11 keeps for web01 (its points.json), oldest first."""
    try:
        return [p["point_id"] for p in json.loads((s.replica_dir / s.vm_id / "points.json").read_text())]
    except FileNotFoundError:
        return []


def vault_points(s: TwoSites) -> list[str]:
    return [p["point_id"] for p in s.asr("point", "list", "web01")]


def replica_disks(s: TwoSites) -> list[str]:
    return [str(s.replica_dir / s.vm_id / "disks" / f"disk{i}.vhdx") for i in range(len(s.disks))]


def nothing_lost(s: TwoSites, acked: list[str]) -> None:
    """Every point the primary had acknowledged is kept by hv11 and listed by the vault, and
    no other point appeared (an interrupted cycle makes none)."""
    assert replica_points(s) == acked
    wait_for(lambda: vault_points(s) == acked, 60, interval=0.3, what=f"the vault to list exactly {acked}")


def disks_equal_source(s: TwoSites, point_id: str, name: str) -> None:
    wait_for(lambda: s.applied() == point_id, 120, interval=0.1, what=f"hv11's replica disks to hold {point_id}")
    s.equal(replica_disks(s), "vhdx", s.raw(name))


# ---- (a) kill -9 mid-transfer ----------------------------------------------------------------------

@pytest.mark.parametrize("victim", ["recovery-agent", "primary-sender"])
def test_kill9_mid_transfer_resumes_incrementally(procs: Procs, tmp_path: Path, victim: str) -> None:
    clock = Clock(tmp_path / "clock")
    cloud = Cloud(procs, tmp_path / "cloud", clock_file=clock.path).start()
    s = TwoSites(cloud, tmp_path, os_size=32 * MiB)
    s.protect()
    first = s.once()
    assert first["modes"] == ["initial", "initial"], first
    s.write(s.hv01, "web01", 0, 2 * MiB, 128 * KiB, 0x42)
    clock.advance(COPY_S)
    second = s.once()
    assert second["modes"] == ["incremental", "incremental"] and second["blocks_changed"] == 2, second
    acked = [first["point_id"], second["point_id"]]

    # 8 MiB of incompressible guest writes on the OS disk (128 blocks) and one block of the data
    # disk: with 1 MiB segments each 2 MiB message is a PutChunks call of its own, made durable
    # before it is answered; the cycle pauses after two of them
    for off in range(8 * MiB, 16 * MiB, MiB):
        s.hv01.write("web01", 0, off, os.urandom(MiB))
    s.write(s.hv01, "web01", 1, 5 * MiB, 64 * KiB, 0x77)
    clock.advance(COPY_S)
    gate = tmp_path / "gate"
    gate.mkdir()
    sender = cloud.procs.start("repl-once", [sys.executable, "-m", "agent.replication", "once", s.vm_id, "--config",
                                             str(s.a.root / "hv01.toml")],
                               env=cloud.env(ASR_REPL_SEGMENT_BYTES=str(MiB), ASR_TEST_UPLOAD_PAUSE=f"2:{gate}"))
    wait_for(lambda: (gate / "paused").exists() or not sender.alive(), 120, what="the upload to pause")
    assert (gate / "paused").exists(), sender.text()
    assert replica_points(s) == acked            # the interrupted cycle has committed nothing

    if victim == "recovery-agent":
        hv11 = s.b.agents["hv11"]
        hv11.kill9()
        assert hv11.popen.returncode == -9
        (gate / "go").touch()                    # the sender goes on, to a dead host: its cycle fails
        assert sender.popen.wait(120) != 0, sender.text()
        s.start_recovery_agent()
        wait_for(lambda: "serving replicas" in s.b.agents["hv11"].text(), 60, what="hv11 serving again")
    else:
        sender.kill9()
        assert sender.popen.returncode == -9
        assert s.b.agents["hv11"].alive()

    third = s.once()
    acked.append(third["point_id"])
    # incremental: only the 129 dirty blocks were read, none of the 40 MiB of the two disks else
    assert third["modes"] == ["incremental", "incremental"], third
    assert third["blocks_read"] == third["blocks_changed"] == 129, third
    # the two calls answered before the kill were durable: only the other 64 random blocks and
    # the data disk's block travel again (a full re-copy would send all 128 and more)
    assert third["chunks_sent"] == 65, third
    assert third["bytes_sent"] <= 65 * FRAME_MAX, third
    nothing_lost(s, acked)
    disks_equal_source(s, third["point_id"], "after-kill")


# ---- (b) a partition between the hosts -------------------------------------------------------------

@pytest.fixture
def netns(procs: Procs) -> Iterator[Netns]:
    ns = Netns()
    try:
        yield ns
    finally:
        procs.stop_all()          # a namespace lives on while a process runs inside it
        ns.close()
    assert ns.leftovers() == [], ns.leftovers()


def log_records(proc: Proc, msg: str, since: int = 0) -> list[dict[str, Any]]:
    """The daemon's JSON log records with message ``msg``, from byte ``since`` of its log."""
    out = []
    with open(proc.log, "rb") as f:
        f.seek(since)
        for line in f.read().decode(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue    # a line still being written
                if rec.get("msg") == msg:
                    out.append(rec)
    return out


def test_partition_between_hosts_heals_without_loss(procs: Procs, netns: Netns, tmp_path: Path) -> None:
    to_cloud, between = netns.link(), netns.link()
    clock = Clock(tmp_path / "clock")
    # every daemon reaches the cloud service (and hv11 its provider prov-b) on the root side of
    # the first link; the primary reaches hv11's replica_listen on the namespace side of the second
    cloud = Cloud(procs, tmp_path / "cloud", clock_file=clock.path, host=to_cloud.root_ip).start()
    s = TwoSites(cloud, tmp_path, b_host=to_cloud.root_ip, replica_ip=between.ns_ip, hv11_wrap=netns.exec())
    hv01, hv11 = s.a.agents["hv01"], s.b.agents["hv11"]
    s.protect(start="now")     # copy every 30 s, from now: the primary's daemon runs the cycles

    def committed(since: int = 0) -> list[dict[str, Any]]:
        return [r for r in log_records(hv01, "point committed", since) if r.get("vm") == "web01"]

    def vm() -> dict[str, Any]:
        return s.state()

    first = wait_for(lambda: committed(), 90, interval=0.2, what="the first scheduled cycle")[0]
    assert first["modes"] == ["initial", "initial"], first
    acked = [str(first["point"])]
    wait_for(lambda: s.applied() == acked[0], 60, interval=0.1, what="hv11's disks at the first point")
    wait_for(lambda: vm()["replication_health"] == "Normal" and vm()["replica_points"] == 1, 60, interval=0.3,
             what="a Normal replica of one point")

    # ---- the partition: only the link between the hosts goes down ----------------------------------
    cut_at = hv01.log.stat().st_size
    between.cut()
    # guest writes while the link is down: 3 blocks of the OS disk and 1 of the data disk
    s.write(s.hv01, "web01", 0, 3 * MiB, 192 * KiB, 0x5a)
    s.write(s.hv01, "web01", 1, 6 * MiB, 4 * KiB, 0x5b)
    # the partition lasts 20 copy intervals by the daemons' clock
    clock.advance(20 * COPY_S)

    def failed() -> list[dict[str, Any]]:
        return [r for r in log_records(hv01, "replication cycle failed", cut_at) if r.get("vm_id") == s.vm_id]

    # hv11, still reaching the cloud, reports its replica Critical (the point is 600 s old); the
    # primary's failing cycles, reported too, name the cause
    unreachable = f"Last error: ASR-0050: the recovery host hv11 at {s.replica_address} is unreachable"

    def critical() -> dict[str, Any] | None:
        st = vm()
        errors = st["health_errors"]
        return st if st["replication_health"] == "Critical" and any(
            e.startswith("recovery host hv11: the latest point is") for e in errors) and any(
            e.startswith(unreachable) for e in errors) and any(
            e["code"] == "EVT-0013" and "Normal -> Critical" in e["message"] for e in st["latest_events"]) else None

    st = wait_for(critical, 120, interval=0.5, what="hv11 to report the replica Critical, hv01 why, and its event")
    assert st["rpo_seconds"] >= 600, st
    # the primary's scheduled cycles run and fail: at least two across the partition
    wait_for(lambda: len(failed()) >= 2, 150, interval=0.5, what="two failed scheduled cycles")
    assert all(r["code"] == "ASR-0050" for r in failed()), failed()
    assert committed(cut_at) == [], committed(cut_at)
    assert replica_points(s) == acked
    assert hv11.alive() and hv01.alive()
    # one more write between the failed cycles
    s.write(s.hv01, "web01", 0, 9 * MiB, 64 * KiB, 0x5c)

    # ---- healed: the next scheduled cycle ships only the blocks written meanwhile --------------------
    healed_at = hv01.log.stat().st_size
    between.heal()
    after = wait_for(lambda: committed(healed_at), 90, interval=0.2, what="a scheduled cycle after the heal")[0]
    hv01.stop()                # no further cycle: the points and disks below are final
    acked += [str(r["point"]) for r in committed(cut_at)]
    assert after["modes"] == ["incremental", "incremental"], after
    assert after["blocks_read"] == after["blocks_changed"] == 5, after
    assert after["bytes_sent"] <= 5 * FRAME_MAX, after
    def normal() -> dict[str, Any] | None:
        # health is computed when asked; its change event is recorded by the health watch on its
        # own turn, which may come a moment later (under load it did)
        st = vm()
        return st if st["replication_health"] == "Normal" and any(
            e["code"] == "EVT-0013" and "Critical -> Normal" in e["message"] for e in st["latest_events"]) else None

    st = wait_for(normal, 60, interval=0.3, what="the replica Normal again, and its event")
    assert st["health_errors"] == [] and st["rpo_seconds"] < 60 and st["replica_points"] == len(acked), st
    nothing_lost(s, acked)
    disks_equal_source(s, acked[-1], "after-heal")
