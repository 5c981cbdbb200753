"""Re-protect, the recovery host's side (agent/replica/sync.py), in process: a sync the primary
does not confirm gives its blocks back to the failover VM's tracking (so the next sync sends
them again: nothing written on the recovery site is forgotten without the primary's
acknowledgement); a confirmed one forgets them, but remembers them for the replica's re-arm,
which then restores every block the VM wrote; a full sync sends exactly the blocks whose hash
differs from the primary's; a VM whose tracking is lost asks for a full sync."""

from __future__ import annotations

from pathlib import Path

from agent.failback import hash_requests
from agent.replica.sync import SentBlocks, SyncSource
from asrpb import failover_pb2
from diskimage.probe import open_disk
from tests.sitetosite.test_replica_failover import BS, _cleanup, _fo, _read, _setup
from tests.sitetosite.test_replica_store import SIZE, VM, commit, expected

START = failover_pb2.SyncStart(session_id=f"{VM}/pr-1")


def _run(src: SyncSource, start: failover_pb2.SyncStart, requests: list[failover_pb2.SyncRequest]
         ) -> list[failover_pb2.SyncReply]:
    return list(src.sync(VM, start, iter(requests), "hv01"))


def _sent(replies: list[failover_pb2.SyncReply]) -> list[int]:
    return [b.index for r in replies if r.WhichOneof("step") == "blocks" for b in r.blocks.blocks]


def _dirty(src: SyncSource) -> int:
    return int(src.hv.tracking_state("vm1")[0]["dirty_blocks"])


APPLIED = failover_pb2.SyncRequest(applied=True)


def test_unconfirmed_blocks_go_back_confirmed_ones_are_remembered_for_the_rearm(tmp_path: Path) -> None:
    clock, h, fo, hv, _ = _setup(tmp_path)
    p1 = commit(h, clock, {0: 1, 3: 2}, None)
    fo.failover(_fo(), epoch=2)            # on the replica disks: its writes are tracked
    src = SyncSource(fo, hv)
    hv.write("vm1", 0, 5 * BS, b"\x77" * BS)
    hv.write("vm1", 0, 6 * BS, b"\x78" * BS)

    # the primary goes away before it says applied: the blocks are not forgotten
    replies = _run(src, START, [])
    assert _sent(replies) == [5, 6] and replies[-1].end.blocks == 2
    assert _dirty(src) == 2
    # again, confirmed: forgotten by the VM's tracking, remembered for the re-arm
    replies = _run(src, START, [APPLIED])
    assert _sent(replies) == [5, 6] and replies[-1].committed
    assert _dirty(src) == 0
    hv.write("vm1", 0, 7 * BS, b"\x79" * BS)
    assert _sent(_run(src, START, [APPLIED])) == [7]
    r = h.vm(VM)
    assert SentBlocks(r.dir).merged([[]], [SIZE]) == [[5, 6, 7]]

    # the VM goes: every block it wrote (synced or not) gets the held point's content back
    hv.write("vm1", 0, 1 * BS, b"\x7a" * BS)
    hv.stop("vm1")
    fo.cleanup(_cleanup())
    assert _read(r.disks.path(0)) == expected([1, 0, 0, 2, 0, 0, 0, 0])
    assert r.disks.state().point_id == p1 and r.apply_latest() == "current"
    assert not (Path(r.dir) / "sent").exists()


def test_a_full_sync_sends_the_blocks_that_differ_from_the_primarys(tmp_path: Path) -> None:
    clock, h, fo, hv, _ = _setup(tmp_path)
    commit(h, clock, {0: 1, 3: 2}, None)
    fo.failover(_fo(), epoch=2)
    src = SyncSource(fo, hv)
    hv.write("vm1", 0, 5 * BS, b"\x77" * BS)
    # the primary holds blocks 0 and 3 as the point had them, and a write of its own at 4
    primary = tmp_path / "primary.raw"
    primary.write_bytes(expected([1, 0, 0, 2, 9, 0, 0, 0]))
    with open_disk(str(primary), readonly=True) as img:
        hashes = [failover_pb2.SyncRequest(hashes=m) for m in hash_requests(START.session_id, 0, img)]
    full = failover_pb2.SyncStart(session_id=START.session_id, full=True)
    replies = _run(src, full, [*hashes, failover_pb2.SyncRequest(hashes_done=True), APPLIED])
    assert _sent(replies) == [4, 5]                        # its own write undone, the VM's fetched
    end = next(r.end for r in replies if r.WhichOneof("step") == "end")
    assert (end.compared, end.blocks, end.bytes) == (8, 2, 2 * BS)
    assert replies[-1].committed and _dirty(src) == 0


def test_lost_tracking_asks_for_a_full_sync(tmp_path: Path) -> None:
    clock, h, fo, hv, _ = _setup(tmp_path)
    commit(h, clock, {0: 1}, None)
    fo.failover(_fo(), epoch=2)
    src = SyncSource(fo, hv)
    hv.reset_tracking("vm1")
    replies = _run(src, START, [])
    assert [r.WhichOneof("step") for r in replies] == ["end"] and replies[0].end.untracked


def test_reverse_syncs_are_exported_as_metrics() -> None:
    """What the primary's agent serves on its metrics page for the VMs it follows."""
    from prometheus_client import CollectorRegistry, generate_latest

    from agent.metrics import ReverseCollector
    from agent.reverse import Entry
    from tests.observe.scrape import samples, value

    ok = Entry("vm-1", "web01", "hv11", "10.0.0.11:7600", "pr-1", 30, synced=True, last_sync_at=1_800_000_000.0,
               synced_at=1_800_000_000.0, last_blocks=4)
    bad = Entry("vm-2", "db01", "hv11", "10.0.0.11:7600", "pr-2", 30, synced=True, last_sync_at=1_800_000_100.0,
                synced_at=1_800_000_000.0, last_error="ASR-0050: the recovery host hv11 is unreachable")
    reg = CollectorRegistry()
    reg.register(ReverseCollector(lambda: [ok, bad], "contoso"))
    s = samples(generate_latest(reg).decode())
    assert value(s, "asr_agent_reverse_last_sync_timestamp_seconds", vm="web01") == 1_800_000_000.0
    assert value(s, "asr_agent_reverse_last_sync_blocks", vm="web01", recovery_host="hv11") == 4
    assert value(s, "asr_agent_reverse_sync_failing", vm="web01") == 0
    assert value(s, "asr_agent_reverse_sync_failing", vm="db01") == 1


def test_a_full_disk_on_the_primary_is_a_recorded_sync_failure(tmp_path: Path) -> None:
    """Regression: an OSError while the primary writes synced blocks (ENOSPC) escaped as a raw
    OSError, which the schedule did not catch: the reverse-sync thread ended and re-protect
    stopped quietly. It is DiskFull (ASR-0061), recorded in the entry like any failure."""
    import errno
    from types import SimpleNamespace

    import pytest

    from agent.reverse import Entry, ReverseReplication
    from asrclock import FakeClock
    from asrerrors import DiskFull

    rt = SimpleNamespace(config=SimpleNamespace(state_dir=str(tmp_path)), clock=FakeClock(1_800_000_000.0))
    rep = ReverseReplication(rt)  # type: ignore[arg-type]

    def full(e: Entry, full: bool) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    rep._pull = full  # type: ignore[method-assign]
    e = Entry("vm-1", "web01", "hv11", "10.0.0.11:7600", "pr-1", 30, synced=True)
    with pytest.raises(DiskFull, match="web01"):
        rep._sync(e, full=False, report=False)
    saved = rep.get("vm-1")
    assert saved is not None and saved.last_error.startswith("ASR-0061")
    assert saved.last_sync_at == 1_800_000_000.0
