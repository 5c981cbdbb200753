"""Issue 10, must-show 3 (the owned-state half): inventory belongs to the provider that
reported it; removing a server releases what waited for it; a vault is not deleted while
anything lives in it, and --force tears it down leaving no stored data; a cloud removed from
the provider's configuration leaves its protected VM SourceMissing with its points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asrclock import SystemClock
from asrerrors import AsrError, CertificateRevoked, PermissionDenied
from asrpb import control_pb2, inventory_pb2, site_pb2
from registration.link import CloudLink
from registration.state import load as load_identity
from tests.failover.fixture import VAULT, asr_job, vm_state
from tests.harness import Cloud, wait_for
from tests.replication.fixture import CLOUDS, protect


def _rows(cloud: Cloud) -> dict[str, list[tuple[Any, ...]]]:
    return {t: cloud.db_rows(t) for t in ("clouds", "hosts", "vms", "protected_items")}


def _link(root: Path, name: str) -> CloudLink:
    return CloudLink(load_identity(str(root / name)), SystemClock(), None)


def _inventory_only(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows without the columns that change by themselves (sync times, host last-seen)."""
    return {"clouds": [r[:3] for r in rows["clouds"]], "hosts": [r[:4] for r in rows["hosts"]],
            "vms": [r[:6] for r in rows["vms"]], "protected_items": [r[:6] for r in rows["protected_items"]]}


def test_a_second_provider_can_neither_overwrite_nor_delete_the_first_ones_inventory(
        cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    assert p.site.register_provider("prov2").returncode == 0
    before = _inventory_only(_rows(cloud))
    link = _link(tmp_path, "prov2")
    try:
        vm = inventory_pb2.Vm(vm_id=p.vm_id, name="vm1", generation=1, cpus=1, memory_mb=512,
                              guest_os="windows-server-2019")
        takeovers = [
            control_pb2.InventorySync(clouds=[inventory_pb2.VmmCloud(name="gold")]),
            control_pb2.InventorySync(clouds=[inventory_pb2.VmmCloud(name="evil", hosts=[
                inventory_pb2.Host(name="hv01", connected=True)])]),
            control_pb2.InventorySync(clouds=[inventory_pb2.VmmCloud(name="evil", hosts=[
                inventory_pb2.Host(name="hv99", connected=True, vms=[vm])])]),
        ]
        for sync in takeovers:
            with pytest.raises(PermissionDenied) as err:
                link.call(link.site.SyncInventory, sync)
            assert "prov1" in str(err.value) + " ".join(err.value.details)
            assert _inventory_only(_rows(cloud)) == before
        # an empty sync removes only prov2's own (no) rows
        link.call(link.site.SyncInventory, control_pb2.InventorySync())
        assert _inventory_only(_rows(cloud)) == before
        # and it cannot disable protection of prov1's VM from the VMM side
        with pytest.raises(PermissionDenied):
            link.call(link.site.RequestProtection, control_pb2.ProtectionRequest(vm_name="vm1", disable=True))
    finally:
        link.close()
    assert vm_state(p)["protection_state"] == "Protected"
    events = cloud.asr_json("event", "list", *VAULT)
    refused = [e for e in events if e["code"] == "ASR-0032"]
    assert refused and all("prov2" in e["message"] and "prov1" in e["message"] for e in refused), events


def test_removing_a_provider_fails_the_job_waiting_for_it(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    assert p.site.provider_proc is not None
    p.site.provider_proc.stop()
    job_id = cloud.asr_json("vm", "unprotect", p.vm, *VAULT)["job_id"]
    assert vm_state(p)["protection_state"] == "DisablingProtection"
    cloud.asr("server", "remove", "prov1", "--role", "provider", *VAULT)
    job = cloud.asr_json("job", "show", job_id, *VAULT)
    assert job["state"] == "Failed" and job["tasks"][0]["error"]["code"] == "ASR-0047", job
    st = vm_state(p)
    # back from DisablingProtection, and with its provider gone its source is missing
    assert st["protection_state"] == "SourceMissing" and st["replication_health"] == "Critical", st
    assert any("no longer registered" in e for e in st["health_errors"]), st
    res = cloud.asr("vm", "unprotect", p.vm, *VAULT, check=False)
    assert res.returncode == 42 and "unprotect-force" in res.stderr, res.stderr
    assert asr_job(p, "vm", "unprotect", p.vm, "--force")["state"] == "Succeeded"
    assert vm_state(p)["protection_state"] == "Unprotected"


def test_a_cloud_removed_from_the_configuration_leaves_its_vm_source_missing(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    point = p.once()["point_id"]
    assert p.site.provider_proc is not None
    p.site.provider_proc.stop()
    p.site.start_provider(clouds=[{"name": "other", "hosts": ["hv09"], "sync": True}])
    st = wait_for(lambda: (lambda s: s if s["protection_state"] == "SourceMissing" else None)(vm_state(p)), 60,
                  what="the VM to become SourceMissing")
    assert st["replication_health"] == "Critical" and any("gold" in e for e in st["health_errors"]), st
    assert [x["point_id"] for x in p.points()] == [point]
    assert "gold" in [c["name"] for c in cloud.asr_json("cloud", "list", *VAULT)]
    events = cloud.asr_json("event", "list", *VAULT, "--vm", p.vm)
    assert any(e["code"] == "ASR-0046" and "gold" in e["message"] for e in events), events
    assert p.once(check=False)["returncode"] == 46          # replication of a missing source is refused
    # the cloud comes back: so does the VM
    p.site.provider_proc.stop()
    p.site.start_provider(clouds=CLOUDS)
    wait_for(lambda: vm_state(p)["protection_state"] == "Protected", 60, what="the VM back to Protected")
    assert p.once()["point_id"]


def test_vault_delete_refuses_with_a_list_and_force_leaves_no_stored_data(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    p.once()
    p.write(0, 0, 65536, 0x42)
    p.once()
    assert asr_job(p, "failover", "test", p.vm)["state"] == "Succeeded"
    storage = cloud.data_dir / "storage"
    packs = [f for f in storage.rglob("*") if f.is_file() and "packs" in f.parts]
    assert packs
    res = cloud.asr("vault", "delete", "contoso", check=False)
    assert res.returncode == 42, res.stderr
    for words in ("1 protected VM(s): vm1", "recovered VM(s): vm1-test", "provider/prov1", "agent/hv01",
                  "storage account store1 holds"):
        assert words in res.stderr, (words, res.stderr)
    assert cloud.asr_json("vault", "show", "contoso")["name"] == "contoso"

    doc = cloud.asr_json("vault", "delete", "contoso", "--force", "--wait", "--timeout", "240")
    assert doc["deleted"] is True, doc
    assert cloud.asr("vault", "show", "contoso", check=False).returncode == 40
    assert not [f for f in storage.rglob("*") if f.is_file()], list(storage.rglob("*"))
    assert not [f for f in (cloud.data_dir / "replication").rglob("*") if f.is_file()]
    assert not [r for r in recovered_rows(cloud)]
    # every server of the vault is refused from now on
    link = _link(tmp_path, "prov1")
    try:
        with pytest.raises(AsrError) as err:
            link.call(link.site.Heartbeat, site_pb2.HeartbeatRequest(version="test"))
        assert isinstance(err.value, CertificateRevoked | PermissionDenied), err.value
    finally:
        link.close()


def recovered_rows(cloud: Cloud) -> list[tuple[Any, ...]]:
    return cloud.db_rows("recovered_vms")


def test_empty_vault_is_deleted_at_once(cloud: Cloud) -> None:
    cloud.asr("vault", "create", "empty", "--region", "japaneast")
    cloud.asr("storage", "create", "s1", "--vault", "empty", "--region", "japaneast")
    assert cloud.asr_json("vault", "delete", "empty") == {"deleted": "empty"}
    assert cloud.asr("vault", "show", "empty", check=False).returncode == 40

