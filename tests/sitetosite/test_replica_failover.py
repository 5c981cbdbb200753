"""Failover on the recovery host (agent/replica/failover.py), in process: a failover to the
point the replica disks hold runs the VM on them and the applier leaves held disks alone
(also at restart); deleting that VM re-arms the replica (full redo from the store); a test
failover and an earlier point run on copies while the replica keeps following the points;
a command delivered again answers the same; a change of point replaces the VM; the failover's
epoch fences the primary's older sessions at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.hypervisor import LocalHypervisor
from agent.replica.applier import Applier
from agent.replica.disks import Applied
from agent.replica.failover import ReplicaFailovers
from agent.replica.role import Replicas
from agent.replica.service import ReplicaService
from agent.replica.store import ReplicaHost
from asrclock import FakeClock
from asrerrors import EncryptionKeyError, Fenced, NotFound
from asrpb import control_pb2
from certs.identity import Identity
from chunkfmt import BlockMap, chunk_id, encode_chunk
from cloudsvc.vaultstore import DiskDelta
from diskimage.probe import open_disk
from tests.sitetosite.test_replica_store import BLOCKS, KEY, SIZE, VM, commit, expected, host

BS = SIZE // BLOCKS


def _read(path: str) -> bytes:
    with open_disk(path, readonly=True) as img:
        return img.read(0, img.virtual_size)


def _setup(tmp_path: Path) -> tuple[FakeClock, ReplicaHost, ReplicaFailovers, LocalHypervisor, Applier]:
    clock = FakeClock(1_800_000_000.0)
    h = host(tmp_path / "replicas", clock)
    hv = LocalHypervisor(str(tmp_path / "vms"), clock)
    applier = Applier(h, threading.Event())
    return clock, h, ReplicaFailovers(h, applier, hv), hv, applier


def _fo(kind: str = "failover", point: str = "", name: str = "vm1") -> control_pb2.ReplicaFailover:
    return control_pb2.ReplicaFailover(host="hv11", vm_id=VM, vm_name="vm1", pairing_id="pr-1", point_id=point,
                                       kind=kind, name=name, networks=["corp-dr"], start=True)


def _cleanup(kind: str = "failover", action: str = "delete") -> control_pb2.ReplicaCleanup:
    return control_pb2.ReplicaCleanup(host="hv11", vm_id=VM, vm_name="vm1", pairing_id="pr-1", kind=kind,
                                      action=action)


def test_failover_to_the_held_point_runs_on_the_replica_disks_and_holds_them(tmp_path: Path) -> None:
    clock, h, fo, hv, _ = _setup(tmp_path)
    p1 = commit(h, clock, {0: 1, 3: 2}, None)
    r = h.vm(VM)
    out = fo.failover(_fo(), epoch=2)
    assert "on the replica disks (no copy)" in out and p1 in out, out
    vm = hv.get("vm1")
    assert vm.power_state == "Running" and [n.network for n in vm.nics] == ["corp-dr"]
    assert [d.path for d in vm.disks] == [r.disks.path(0)]
    assert r.disks.state().held_by == "vm1"
    # the VM writes; a point that still arrives (the primary was fenced by the vault already, but
    # say a commit raced) is stored and NOT applied under the running VM
    hv.write("vm1", 0, 5 * BS, b"\x77" * BS)
    written = _read(r.disks.path(0))
    commit(h, clock, {1: 9}, p1, apply=False)
    assert r.apply_latest() == "held"
    assert _read(r.disks.path(0)) == written
    # nor at a restart's recovery
    r.recover()
    assert _read(r.disks.path(0)) == written and r.disks.state().held_by == "vm1"
    # delivered again: the same VM, nothing redone
    assert "already made" in fo.failover(_fo(point=p1), epoch=2)

    # deleting it re-arms the replica: the block the VM wrote gets the held point's content back
    # (its tracking says which), so the next apply is incremental, not a rebuild of the disks
    hv.stop("vm1")
    out = fo.cleanup(_cleanup())
    assert "follow the replica's points again" in out
    with pytest.raises(NotFound):
        hv.get("vm1")
    assert r.disks.state() == Applied(p1, "", False, "")
    assert _read(r.disks.path(0)) == expected([1, 0, 0, 2, 0, 0, 0, 0])
    assert r.apply_latest() == "incremental"
    assert _read(r.disks.path(0)) == expected([1, 9, 0, 2, 0, 0, 0, 0])
    assert fo.made(VM) == {}


def test_a_failover_vm_with_untrusted_tracking_leaves_the_disks_to_a_full_redo(tmp_path: Path) -> None:
    clock, h, fo, hv, _ = _setup(tmp_path)
    p1 = commit(h, clock, {0: 1, 3: 2}, None)
    r = h.vm(VM)
    fo.failover(_fo(), epoch=2)
    hv.write("vm1", 0, 5 * BS, b"\x77" * BS)
    hv.reset_tracking("vm1")          # e.g. the log was lost: what the VM wrote is unknown
    commit(h, clock, {1: 9}, p1, apply=False)
    fo.cleanup(_cleanup())
    assert r.disks.state() == Applied()
    assert r.apply_latest() == "full"
    assert _read(r.disks.path(0)) == expected([1, 9, 0, 2, 0, 0, 0, 0])


def test_test_failover_and_earlier_points_run_on_copies(tmp_path: Path) -> None:
    clock, h, fo, hv, _ = _setup(tmp_path)
    p1 = commit(h, clock, {0: 1}, None)
    p2 = commit(h, clock, {0: 2, 2: 3}, p1)
    r = h.vm(VM)
    out = fo.failover(_fo("test", p1, "vm1-test"), epoch=1)
    assert "on a copy of the point" in out
    test_vm = hv.get("vm1-test")
    assert test_vm.disks[0].path.startswith(str(Path(r.dir) / "test"))
    assert _read(test_vm.disks[0].path) == expected([1, 0, 0, 0, 0, 0, 0, 0])
    # replication goes on: a new point is applied to the replica disks, the test VM's copy stays
    p3 = commit(h, clock, {4: 4}, p2)
    assert r.disks.state().point_id == p3 and not r.disks.state().held_by
    assert _read(test_vm.disks[0].path) == expected([1, 0, 0, 0, 0, 0, 0, 0])
    fo.cleanup(_cleanup("test"))
    assert not (Path(r.dir) / "test").exists() and [v.name for v in hv.list()] == []

    # a failover to an earlier point is a copy; a change of point replaces the VM
    fo.failover(_fo(point=p1), epoch=2)
    assert _read(hv.get("vm1").disks[0].path) == expected([1, 0, 0, 0, 0, 0, 0, 0])
    assert not r.disks.state().held_by
    out = fo.failover(_fo(point=p2), epoch=2)
    assert p2 in out and [v.name for v in hv.list()] == ["vm1"]
    assert _read(hv.get("vm1").disks[0].path) == expected([2, 0, 3, 0, 0, 0, 0, 0])
    with pytest.raises(NotFound, match="is not a point of this replica"):
        fo.failover(_fo(point="rp-nope"), epoch=2)


def test_the_failover_epoch_fences_the_primarys_older_sessions(tmp_path: Path) -> None:
    clock, h, fo, _, applier = _setup(tmp_path)
    commit(h, clock, {0: 1}, None)
    svc = ReplicaService(h, "vault-1", applier)
    primary = Identity(role="agent", vault_id="vault-1", name="hv01")
    svc.begin_cycle(primary, VM, 1, "pr-1")     # epoch 1: admitted
    fo.failover(_fo(), epoch=2)
    with pytest.raises(Fenced):
        svc.begin_cycle(primary, VM, 1, "pr-1")


def test_releasing_the_replica_keeps_the_disks_of_its_failover_vm(tmp_path: Path) -> None:
    """Disabling protection of a VM failed over site to site releases its replica with
    delete_data: the VM running on the replica disks is the production VM now and keeps them
    (the release used to delete the whole replica directory under it); a test VM goes."""
    clock, h, fo, hv, _ = _setup(tmp_path)
    commit(h, clock, {0: 1, 2: 5}, None)
    r = h.vm(VM)
    fo.failover(_fo("test", name="vm1-test"), epoch=1)
    fo.failover(_fo(), epoch=2)
    hv.write("vm1", 0, 6 * BS, b"\x66" * BS)
    replicas = Replicas(h, None, None, 0, None, None, fo)  # type: ignore[arg-type]
    replicas.release(VM, delete_data=True)
    assert [v.name for v in hv.list()] == ["vm1"]
    disk = hv.get("vm1").disks[0].path
    assert _read(disk)[6 * BS:7 * BS] == b"\x66" * BS and _read(disk)[:BS] == b"\x01" * BS
    assert sorted(p.name for p in Path(r.dir).iterdir()) == ["disks"]
    assert h.pairings.get(VM) is None


def test_an_encrypted_replica_is_refused_with_the_reason(tmp_path: Path) -> None:
    """A VM encrypted with the customer's key replicates to a recovery host that does not hold
    the key: its points are kept, not applied, and a failover there says why, making nothing."""
    clock, h, fo, hv, _ = _setup(tmp_path)
    r = h.vm(VM)
    sid = r.store.begin_session(VM)
    data = b"\x05" * BS
    cid = chunk_id(KEY, data)
    r.store.put_chunks(sid, [(cid, encode_chunk(data, bytes(32)))])
    r.store.flush()
    pairing = h.pairings.get(VM)
    assert pairing is not None
    r.commit(sid, [DiskDelta(SIZE, BlockMap.from_mapping({0: cid}))], None, "crash", clock.now(), 1, 1, pairing)
    assert r.apply_latest() == "encrypted"
    with pytest.raises(EncryptionKeyError, match="a recovery host does not hold"):
        fo.failover(_fo(), epoch=2)
    assert hv.list() == [] and fo.made(VM) == {}
