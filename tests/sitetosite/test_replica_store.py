"""The recovery host's replica store (agent/replica/store.py, disks.py, applier.py), in
process: point records, retention, the replica disks brought to the newest point after the
commits (coalescing the points that arrived meanwhile), CommitPoint answered while an apply
is paused, an apply interrupted by a crash redone from the store, and a point row without a
record dropped at start."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.replica.applier import Applier
from agent.replica.disks import ReplicaDisks
from agent.replica.reporter import Reporter, apply_lag_bound
from agent.replica.service import ReplicaService
from agent.replica.store import ReplicaHost, ReplicaVm
from asrclock import FakeClock
from asrerrors import Fenced, NotFound, PermissionDenied
from asrpb import control_pb2, inventory_pb2
from certs.identity import Identity
from chunkfmt import BLOCK_SIZE, ZERO_ID, BlockMap, chunk_id, encode_chunk
from cloudsvc.vaultstore import DiskDelta
from diskimage.probe import open_disk
from diskimage.vhdx import FULLY_PRESENT, NOT_PRESENT, ZERO, VhdxImage

VM = "vm-0001"
BLOCKS = 8
SIZE = BLOCKS * BLOCK_SIZE
KEY = bytes(range(32))


def host(root: Path, clock: FakeClock, retention_hours: int = 2, freq: int = 1) -> ReplicaHost:
    h = ReplicaHost(str(root), clock)
    policy = inventory_pb2.Policy(copy_frequency_seconds=freq, retention_hours=retention_hours)
    h.pairings.accept(control_pb2.AcceptReplica(vm_id=VM, vm_name="vm1", source_host="hv01", pairing_id="pr-1",
                                                policy=policy), 1, clock.now())
    return h


def block(value: int) -> bytes:
    return bytes([value]) * BLOCK_SIZE


def commit(h: ReplicaHost, clock: FakeClock, changes: dict[int, int], base: str | None, size: int = SIZE,
           apply: bool = True) -> str:
    """Ship ``changes`` (block -> fill byte, 0 = zero block) as the primary's cycle would;
    then, unless ``apply`` is False, do the applier's work for it on this thread."""
    r = h.vm(VM)
    sid = r.store.begin_session(VM)
    items, delta = [], {}
    for b, v in sorted(changes.items()):
        if v == 0:
            delta[b] = ZERO_ID
            continue
        cid = chunk_id(KEY, block(v))
        delta[b] = cid
        items.append((cid, encode_chunk(block(v), None)))
    if items:
        r.store.put_chunks(sid, items)
        r.store.flush()
    clock.advance(1)
    pairing = h.pairings.get(VM)
    assert pairing is not None
    point = r.commit(sid, [DiskDelta(size, BlockMap.from_mapping(delta))], base, "crash", clock.now(), 1,
                     len(items), pairing)
    if apply:
        r.apply_latest()
    return point.point_id


def disk_bytes(r: ReplicaVm) -> bytes:
    with open_disk(r.disks.path(0), readonly=True) as img:
        return img.read(0, SIZE)


def expected(model: list[int]) -> bytes:
    return b"".join(block(v) for v in model)


# (changes, crash after the apply, defer the apply: the next point arrives first)
steps = st.lists(st.tuples(st.dictionaries(st.integers(0, BLOCKS - 1), st.integers(0, 3), max_size=4),
                           st.booleans(), st.booleans()), min_size=1, max_size=6)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_replica_disks_follow_the_points_and_survive_an_interrupted_apply(tmp_path_factory: object,
                                                                          plan: list[tuple[dict[int, int], bool,
                                                                                           bool]]
                                                                          ) -> None:
    root = tmp_path_factory.mktemp("replica")  # type: ignore[attr-defined]
    clock = FakeClock()
    h = host(root, clock)
    model = [0] * BLOCKS
    base: str | None = None
    ids: list[str] = []
    try:
        for i, (changes, crash, defer) in enumerate(plan):
            base = commit(h, clock, changes, base, apply=False)
            ids.append(base)
            for b, v in changes.items():
                model[b] = v
            if defer and i < len(plan) - 1:
                continue   # several points before the next apply: it goes straight to the newest
            h.vm(VM).apply_latest()
            if crash:
                # a crash in the middle of the next apply: the marker names a point being
                # applied, and the disk holds something else
                r = h.vm(VM)
                (Path(r.disks.state_path)).write_text(json.dumps({"point_id": "", "applying": base}))
                with open_disk(r.disks.path(0)) as img:
                    img.write(0, block(0xEE) * 2)
                h.close()
                h = ReplicaHost(str(root), clock)
                h.recover()
                assert h.vm(VM).disks.state().point_id == base
            r = h.vm(VM)
            assert disk_bytes(r) == expected(model)
            assert [rec.point_id for rec in r.records()] == ids   # 1 s apart, 1 s interval: all kept
    finally:
        h.close()


def test_retention_prunes_records_and_points(tmp_path: Path) -> None:
    clock = FakeClock()
    h = host(tmp_path, clock, retention_hours=0)
    try:
        p1 = commit(h, clock, {0: 1}, None)
        p2 = commit(h, clock, {1: 2}, p1)
        r = h.vm(VM)
        # retention 0: only the latest, and the point the disks held when it ran (the apply
        # comes after the commit)
        assert [rec.point_id for rec in r.records()] == [p1, p2]
        p3 = commit(h, clock, {2: 3}, p2)
        assert [rec.point_id for rec in r.records()] == [p2, p3]
        assert [p.point_id for p in r.store.list_points(VM)] == [p2, p3]
        assert disk_bytes(r) == block(1) + block(2) + block(3) + bytes(SIZE - 3 * BLOCK_SIZE)
    finally:
        h.close()


def test_a_point_without_a_record_is_dropped_at_start(tmp_path: Path) -> None:
    clock = FakeClock()
    h = host(tmp_path, clock)
    try:
        p1 = commit(h, clock, {0: 1}, None)
        r = h.vm(VM)
        records = (Path(r.records_path)).read_text()
        p2 = commit(h, clock, {0: 2}, p1)
        # a crash after the point row and before its record: the record file as it was
        (Path(r.records_path)).write_text(records)
        h.close()
        h = ReplicaHost(str(tmp_path), clock)
        h.recover()
        r = h.vm(VM)
        assert [p.point_id for p in r.store.list_points(VM)] == [p1] and p2 != p1
        assert disk_bytes(r)[:BLOCK_SIZE] == block(1)                  # the disks went back to p1
        # the primary's retried commit makes the point again, with the same id
        assert commit(h, FakeClock(clock.now() - 1), {0: 2}, p1) == p2
    finally:
        h.close()


def test_pairing_is_idempotent_and_a_new_pairing_replaces_the_source(tmp_path: Path) -> None:
    clock = FakeClock()
    h = host(tmp_path, clock)
    body = control_pb2.AcceptReplica(vm_id=VM, vm_name="vm1", source_host="hv01", pairing_id="pr-1")
    p, replaced = h.pairings.accept(body, 1, clock.now())
    assert not replaced and p.source_host == "hv01"
    assert h.pairings.raise_epoch(VM, 3) == 3 and h.pairings.raise_epoch(VM, 2) == 3
    body = control_pb2.AcceptReplica(vm_id=VM, vm_name="vm1", source_host="hv05", pairing_id="pr-2")
    p, replaced = h.pairings.accept(body, 0, clock.now())
    assert replaced and p.source_host == "hv05" and p.epoch == 3
    h.release(VM, delete_data=True)
    assert h.pairings.get(VM) is None and not (tmp_path / VM).exists()


def test_a_new_replica_must_fit_beside_what_the_held_ones_may_still_grow_into(tmp_path: Path) -> None:
    import shutil

    from asrerrors import DiskFull

    clock = FakeClock()
    h = ReplicaHost(str(tmp_path / "replicas"), clock)
    free = shutil.disk_usage(tmp_path).free
    h.check_room("vm-a", "web01", [free // 4])                       # fits
    held = control_pb2.AcceptReplica(vm_id="vm-a", vm_name="web01", source_host="hv01", pairing_id="pr-a",
                                     disks=[inventory_pb2.Disk(virtual_size=free // 2)])
    h.pairings.accept(held, 1, clock.now())                          # held, nothing stored yet: promised
    with pytest.raises(DiskFull, match=r"the replica of db01 needs up to \d+ bytes.*promised to the replicas"):
        h.check_room("vm-b", "db01", [free // 2 + free // 8])
    h.check_room("vm-b", "db01", [free // 8])                        # what is left still fits
    h.check_room("vm-a", "web01", [free // 2])                       # a VM's own pairing does not count against it


def test_the_service_admits_only_the_paired_source_of_the_current_epoch(tmp_path: Path) -> None:
    clock = FakeClock()
    h = host(tmp_path, clock)
    svc = ReplicaService(h, "vault-a", Applier(h, threading.Event()))
    hv01 = Identity("agent", "hv01", "vault-a")
    try:
        with pytest.raises(PermissionDenied, match="another vault"):
            svc.check_caller(Identity("agent", "hv01", "vault-b"), "/asr.v1.Replication/BeginCycle")
        with pytest.raises(PermissionDenied, match="holds no replica"):
            svc.begin_cycle(hv01, "vm-other", 1, "pr-1")
        with pytest.raises(PermissionDenied, match="'hv07' may not ship"):
            svc.begin_cycle(Identity("agent", "hv07", "vault-a"), VM, 1, "pr-1")
        token, base = svc.begin_cycle(hv01, VM, 3, "pr-1")
        assert base is None and token.startswith(f"{VM}/3/")
        with pytest.raises(Fenced, match="older than this replica's epoch 3"):
            svc.begin_cycle(hv01, VM, 2, "pr-1")
        with pytest.raises(Fenced):
            svc.missing(hv01, f"{VM}/2/{token.rsplit('/', 1)[1]}", "pr-1", [])
        with pytest.raises(PermissionDenied, match="is not the pairing"):
            svc.missing(hv01, token, "pr-0", [])
        assert svc.missing(hv01, token, "pr-1", [b"\x01" * 32]) == [b"\x01" * 32]
        with pytest.raises(NotFound, match="malformed"):
            svc.missing(hv01, "nonsense", "pr-1", [])
    finally:
        h.close()


def test_a_failed_apply_keeps_the_point_and_is_redone_in_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    clock = FakeClock()
    h = host(tmp_path, clock)
    try:
        p1 = commit(h, clock, {0: 1, 3: 2}, None)
        real = ReplicaDisks._write_blocks

        def failing(self: ReplicaDisks, *args: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(ReplicaDisks, "_write_blocks", failing)
        p2 = commit(h, clock, {3: 3}, p1, apply=False)        # acknowledged: the point is durable
        r = h.vm(VM)
        assert r.apply_latest() == "failed"
        assert [rec.point_id for rec in r.records()] == [p1, p2]
        assert r.disks.state().applying == p2 and "No space left" in r.apply_error
        monkeypatch.setattr(ReplicaDisks, "_write_blocks", real)
        commit(h, clock, {5: 4}, p2)                          # the marker forces a full apply
        assert disk_bytes(r) == expected([1, 0, 0, 3, 0, 4, 0, 0]) and r.apply_error == ""
    finally:
        h.close()


def test_a_full_apply_syncs_once_per_disk_not_per_vhdx_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """The first copy of a disk used to fsync once per newly allocated VHDX block; the marker
    protocol makes that useless (an interrupted apply is redone in full). A full apply now
    costs the same fsyncs whatever the number of blocks, writes whole VHDX blocks (an empty
    one stays unallocated), and leaves an image qemu-img accepts and finds equal to the point."""
    size = 64 * 1024 * 1024 + 2 * BLOCK_SIZE         # qemu-img's 8 MiB VHDX blocks: 9, the last partial
    per = 8 * 1024 * 1024 // BLOCK_SIZE
    clock = FakeClock()
    h = host(tmp_path, clock)
    count = 0
    real = os.fsync

    def counting(fd: int) -> None:
        nonlocal count
        count += 1
        real(fd)

    def full_apply_fsyncs(point_id: str) -> int:
        nonlocal count
        r = h.vm(VM)
        r.disks._set(r.disks.state().__class__("", point_id))   # as after a crash: redo in full
        point = r.store.get_point(point_id)
        assert point is not None
        count = 0
        monkeypatch.setattr(os, "fsync", counting)
        try:
            assert r.disks.apply(r.store, point, None, "") == "full"
        finally:
            monkeypatch.setattr(os, "fsync", real)
        return count

    try:
        p1 = commit(h, clock, {0: 1}, None, size)                                  # one VHDX block
        # eight VHDX blocks; the fifth (blocks 4*per..5*per-1) stays empty; the last is partial
        changes = {b * per + (3 if b < 8 else 0): 2 + b for b in range(9) if b != 4}
        changes |= {per - 1: 0x33, 8 * per + 1: 0x44}
        p2 = commit(h, clock, changes, p1, size)
        assert full_apply_fsyncs(p1) == full_apply_fsyncs(p2)
        r = h.vm(VM)
        expect = tmp_path / "expected.raw"
        model = {0: 1} | changes
        with open(expect, "wb") as f:
            f.truncate(size)
            for b, v in model.items():
                f.seek(b * BLOCK_SIZE)
                f.write(block(v))

        def check() -> None:
            path = r.disks.path(0)
            for argv in (["qemu-img", "check", "-q", "-f", "vhdx", path],
                         ["qemu-img", "compare", "-f", "vhdx", "-F", "raw", path, str(expect)]):
                res = subprocess.run(argv, capture_output=True, text=True, check=False)
                assert res.returncode == 0, res.stdout + res.stderr

        check()
        with VhdxImage(r.disks.path(0), readonly=True) as img:
            assert img.meta.block_size == per * BLOCK_SIZE
            states = [img._entry(b)[0] for b in range(9)]
        assert states[4] in (NOT_PRESENT, ZERO) and states[:4] + states[5:] == [FULLY_PRESENT] * 8
        # an incremental apply into the empty VHDX block allocates it (without a per-block fsync)
        commit(h, clock, {4 * per + 7: 0x55}, p2, size)
        assert r.disks.state().point_id != p2 and not r.disks.state().applying
        with open(expect, "r+b") as g:
            g.seek((4 * per + 7) * BLOCK_SIZE)
            g.write(block(0x55))
        check()
    finally:
        h.close()


class Gate:
    """Pauses the apply of the replica disks (``ReplicaDisks.<method>``) at its start, after
    ``applied.json`` named the point being applied: ``paused`` is set when an apply waits,
    ``go`` lets it on (with ``kill``: the apply writes one wrong block first and its thread
    ends at ``go``, as a killed process's would). Records each apply and how it went."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, method: str, kill: bool = False) -> None:
        self.paused = threading.Event()
        self.go = threading.Event()
        self.applied: list[tuple[str, str]] = []
        real_apply, real_step = ReplicaDisks.apply, getattr(ReplicaDisks, method)
        gate = self

        def apply(disks: ReplicaDisks, store: Any, point: Any, *args: Any) -> str:
            how = real_apply(disks, store, point, *args)
            gate.applied.append((point.point_id, how))
            return how

        def step(disks: ReplicaDisks, *args: Any) -> Any:
            if not gate.go.is_set():
                if kill:
                    with open_disk(disks.path(0)) as img:   # half-written, as a crash would leave it
                        img.write(0, block(0xEE))
                gate.paused.set()
                assert gate.go.wait(60), "the test never let the apply go on"
                if kill:
                    raise Killed()
            return real_step(disks, *args)

        monkeypatch.setattr(ReplicaDisks, "apply", apply)
        monkeypatch.setattr(ReplicaDisks, method, step)


class Killed(Exception):
    """The apply's thread ends here, as if the process were killed (nothing more is written)."""


def svc_commit(svc: ReplicaService, clock: FakeClock, changes: dict[int, int], base: str | None) -> str:
    """One primary's cycle through the service: BeginCycle, PutChunks, CommitPoint."""
    hv01 = Identity("agent", "hv01", "vault-a")
    token, _ = svc.begin_cycle(hv01, VM, 1, "pr-1")
    r, sid = svc.upload(hv01, token, "pr-1")
    delta = {b: chunk_id(KEY, block(v)) if v else ZERO_ID for b, v in changes.items()}
    r.store.put_chunks(sid, [(chunk_id(KEY, block(v)), encode_chunk(block(v), None)) for v in set(changes.values())
                             if v])
    r.store.flush()
    clock.advance(1)
    return svc.commit(hv01, token, "pr-1", VM, [DiskDelta(SIZE, BlockMap.from_mapping(delta))], base, "crash",
                      clock.now(), len(delta)).point_id


def test_commit_point_answers_before_the_apply_which_coalesces_to_the_newest(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    clock = FakeClock()
    h = host(tmp_path, clock, retention_hours=0)     # retention keeps only the newest point...
    stopping = threading.Event()
    applier = Applier(h, stopping)
    svc = ReplicaService(h, "vault-a", applier)
    thread = threading.Thread(target=applier.run, name="replica-apply", daemon=True)
    thread.start()
    channel = grpc.insecure_channel("127.0.0.1:9")   # never used: ``build`` makes the report only
    reporter = Reporter(h, channel, clock, stopping)
    try:
        p1 = svc_commit(svc, clock, {0: 1, 2: 2}, None)
        assert svc.wait_applied(VM, p1, 60)
        r = h.vm(VM)
        assert disk_bytes(r) == expected([1, 0, 2, 0, 0, 0, 0, 0])
        gate = Gate(monkeypatch, "_write_blocks")
        clock.advance(10 * apply_lag_bound(1))         # p2 comes after a long outage (a partition)
        p2 = svc_commit(svc, clock, {1: 3}, p1)
        assert gate.paused.wait(60)
        # CommitPoint answered, the apply of p2 is in progress (marker set) and waits
        assert r.disks.state() == r.disks.state().__class__(p1, p2)
        # the disks are behind only since p2 arrived, not since p1 (the report went Warning
        # "hold no point, 600s behind" here, and Critical -> Warning -> Normal after a partition)
        report = reporter.build(VM)
        assert report.applied_point_id == "" and report.health == "Normal", report
        assert not svc.wait_applied(VM, p2, 0.1)
        # two more points arrive while it waits; CommitPoint still answers at once
        clock.advance(apply_lag_bound(1))
        p3 = svc_commit(svc, clock, {2: 0, 3: 3}, p2)
        p4 = svc_commit(svc, clock, {5: 1}, p3)
        # ...and never the point the disks hold nor the one being applied
        assert {p.point_id for p in r.store.list_points(VM)} == {p1, p2, p4}
        report = reporter.build(VM)
        assert report.applied_point_id == "" and report.health == "Warning", report
        assert "behind the newest point" in report.message, report.message
        gate.go.set()
        assert svc.wait_applied(VM, p4, 60) and svc.wait_applied(VM, p2, 0)
        # p3 was never applied: the applier went from p2 straight to p4, writing only the
        # blocks that differ between them
        assert gate.applied == [(p2, "incremental"), (p4, "incremental")]
        assert disk_bytes(r) == expected([1, 3, 0, 3, 0, 1, 0, 0])
        assert r.disks.state() == r.disks.state().__class__(p4, "")
        report = reporter.build(VM)
        assert report.applied_point_id == p4 and report.health == "Normal", report
    finally:
        stopping.set()
        applier.stop()
        thread.join(10)
        channel.close()
        h.close()
    assert not thread.is_alive()


def test_a_restart_in_the_middle_of_an_apply_redoes_it_in_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    clock = FakeClock()
    h = host(tmp_path, clock)
    try:
        p1 = commit(h, clock, {0: 1, 4: 2}, None)
        p2 = commit(h, clock, {4: 3, 7: 4}, p1, apply=False)   # acknowledged, not applied yet
        gate = Gate(monkeypatch, "_write_blocks", kill=True)
        outcome: list[BaseException] = []

        def apply() -> None:
            try:
                h.vm(VM).apply_latest()
            except Killed as exc:
                outcome.append(exc)

        t = threading.Thread(target=apply, name="replica-apply")
        t.start()
        assert gate.paused.wait(60)
        # the process dies here: what a restarted agent finds is the marker naming p2 and a
        # disk that is neither p1 nor p2
        assert h.vm(VM).disks.state().applying == p2
        gate.go.set()
        t.join(60)
        assert outcome and not t.is_alive()
        assert disk_bytes(h.vm(VM))[:BLOCK_SIZE] == block(0xEE)
        h2 = ReplicaHost(str(tmp_path), clock)
        try:
            h2.recover()
            r = h2.vm(VM)
            assert r.disks.state() == r.disks.state().__class__(p2, "")
            assert gate.applied[-1] == (p2, "full")
            assert disk_bytes(r) == expected([1, 0, 0, 0, 3, 0, 0, 4])
            # a restart between an acknowledged commit and its apply: the disks hold a complete
            # older point, so only the blocks that differ are written
            commit(h2, clock, {1: 5}, p2, apply=False)
            p3 = r.records()[-1].point_id
        finally:
            h2.close()
        h3 = ReplicaHost(str(tmp_path), clock)
        try:
            h3.recover()
            r = h3.vm(VM)
            assert r.disks.state() == r.disks.state().__class__(p3, "")
            assert gate.applied[-1] == (p3, "incremental")
            assert disk_bytes(r) == expected([1, 5, 0, 0, 3, 0, 0, 4])
        finally:
            h3.close()
    finally:
        h.close()


def test_a_failed_apply_is_retried_without_a_new_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The applier thread tries a failed apply again after ``retry_s`` (it used to wait for the
    next point or a restart: a primary with nothing more to ship left the disks behind)."""
    clock = FakeClock()
    h = host(tmp_path, clock)
    stopping = threading.Event()
    applier = Applier(h, stopping, retry_s=0.05)
    calls: list[int] = []
    real = ReplicaDisks._full

    def full_failing_once(self: ReplicaDisks, *args: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(self, *args)

    monkeypatch.setattr(ReplicaDisks, "_full", full_failing_once)
    t = threading.Thread(target=applier.run, daemon=True)
    try:
        commit(h, clock, {0: 7}, None, apply=False)
        t.start()
        r = h.vm(VM)
        p = r.records()[-1].point_id
        assert applier.wait_applied(VM, p, 30), r.apply_error
        assert len(calls) == 2 and disk_bytes(r) == expected([7, 0, 0, 0, 0, 0, 0, 0])
    finally:
        stopping.set()
        applier.stop()
        t.join(10)
        h.close()
