"""The agent's own state files go through durablefile (data fsynced, renamed, the directory
fsynced; secrets created 0600), and one chunkfmt Keys serves the agent and materialisation."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import durablefile
from agent.commands import AppliedLog
from agent.hypervisor import LocalHypervisor
from agent.replication.fingerprints import DiskFingerprints
from agent.replication.state import StateStore, VmReplicationState
from agent.settings import Settings
from asrpb import control_pb2, inventory_pb2
from chunkfmt import CustomerKey, vault_id_key
from chunkfmt.keys import Keys
from tests.hv import qemu


@pytest.fixture
def synced_dirs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every directory durablefile fsyncs (after a rename), in order."""
    seen: list[str] = []
    real = durablefile.fsync_dir

    def record(directory: str | os.PathLike[str]) -> None:
        seen.append(os.path.abspath(os.fspath(directory)))
        real(directory)

    monkeypatch.setattr(durablefile, "fsync_dir", record)
    return seen


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if ".tmp" in p.name]


def test_settings_state_and_applied_log_are_durable(tmp_path: Path, synced_dirs: list[str]) -> None:
    settings = Settings(str(tmp_path))
    cmd = control_pb2.EnableReplication(vm_id="v1", vm_name="vm1", vault_id="vault",
                                        policy=inventory_pb2.Policy(copy_frequency_seconds=30),
                                        customer_key=b"k" * 32)
    settings.enable(cmd, now=5.0, epoch=3)
    assert synced_dirs == [str(tmp_path), str(tmp_path / "replication")]
    assert stat.S_IMODE(os.stat(settings.customer_key_path).st_mode) == 0o600
    assert settings.get("v1") is not None and settings.get("v1").epoch == 3  # type: ignore[union-attr]
    settings.save_host_policy(control_pb2.ConfigureHost(vault_id="vault"))
    assert synced_dirs[-1] == str(tmp_path)

    StateStore(str(tmp_path)).save("v1", VmReplicationState(last_point_id="p1"))
    assert synced_dirs[-1] == str(tmp_path / "replication-state")
    AppliedLog(str(tmp_path)).put(control_pb2.CommandResult(id="c1", ok=True), "power_vm", 1.0)
    assert synced_dirs[-1] == str(tmp_path / "commands")
    for d in (tmp_path, tmp_path / "replication", tmp_path / "replication-state", tmp_path / "commands"):
        assert _no_temp_files(d), list(d.iterdir())


def test_settings_without_an_epoch_mean_epoch_1(tmp_path: Path) -> None:
    settings = Settings(str(tmp_path))
    (tmp_path / "replication" / "v1.json").write_text(json.dumps(
        {"vm_id": "v1", "vm_name": "vm1", "vault_id": "vault", "policy": {}, "enabled_at": 1.0}))
    got = settings.get("v1")
    assert got is not None and got.epoch == 1
    assert settings.grant("v1", 4) and settings.get("v1").epoch == 4  # type: ignore[union-attr]
    assert not settings.grant("nope", 4)
    # a repeated EnableReplication without an epoch keeps the granted one
    settings.enable(control_pb2.EnableReplication(vm_id="v1", vm_name="vm1"), now=2.0)
    assert settings.get("v1").epoch == 4  # type: ignore[union-attr]


def test_the_policys_compression_survives_the_settings_file_and_an_older_file_reads_balanced(
        tmp_path: Path) -> None:
    settings = Settings(str(tmp_path))
    settings.enable(control_pb2.EnableReplication(vm_id="v1", vm_name="vm1", vault_id="vault",
                                                  policy=inventory_pb2.Policy(compression="strong")), now=1.0)
    assert json.loads((tmp_path / "replication" / "v1.json").read_text())["policy"]["compression"] == "strong"
    assert [rs.policy.compression for rs in settings.all()] == ["strong"]   # what the engine hands the cycle
    # a file written before policies had a compression, and an EnableReplication from an older cloud
    (tmp_path / "replication" / "v2.json").write_text(json.dumps(
        {"vm_id": "v2", "vm_name": "vm2", "vault_id": "vault", "policy": {"copy_frequency_seconds": 30},
         "enabled_at": 1.0}))
    settings.enable(control_pb2.EnableReplication(vm_id="v3", vm_name="vm3", policy=inventory_pb2.Policy()), now=1.0)
    got = {rs.vm_id: rs.policy for rs in settings.all()}
    assert {k: p.compression for k, p in got.items()} == {"v1": "strong", "v2": "balanced", "v3": "balanced"}
    assert got["v2"].copy_frequency_seconds == 30
    settings.save_host_policy(control_pb2.ConfigureHost(vault_id="vault",
                                                        policy=inventory_pb2.Policy(compression="fast")))
    assert settings.host_policy()["policy"]["compression"] == "fast"  # type: ignore[index]


def test_vm_definitions_and_fingerprint_files_are_durable(tmp_path: Path, synced_dirs: list[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    disk = tmp_path / "os.vhdx"
    qemu.create(disk, "vhdx-dynamic-1m", 1 << 20)
    hv = LocalHypervisor(str(tmp_path / "vms"))
    hv.create("vm1", str(disk), guest_os="ubuntu-22.04")
    assert str(tmp_path / "vms") in synced_dirs
    hv.close()

    from agent.replication import fingerprints

    monkeypatch.setattr(fingerprints, "fsync_dir", durablefile.fsync_dir)
    fps = DiskFingerprints(tmp_path / "fp", 0)
    pending = fps.pending(2, whole=True)
    pending.add([0, 1], bytes(32))
    pending.commit("p1", "")
    assert synced_dirs[-1] == str(tmp_path / "fp")
    assert fps.open_for("p1", 2)
    fps.close()


def test_one_keys_for_the_agent_and_materialisation() -> None:
    from agent.replication import cycle
    from cloudsvc.failover import materialise

    assert cycle.Keys is Keys and materialise.Keys is Keys
    plain = Keys.for_vault("vault-1")
    assert plain == Keys(id_key=vault_id_key("vault-1"), aead_key=None) and not plain.encrypted
    key = CustomerKey.generate()
    enc = Keys.for_customer_key(key)
    assert (enc.id_key, enc.aead_key) == (key.id_key, key.aead_key) and enc.encrypted
