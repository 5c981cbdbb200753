"""Issue 11, must-show 6 (the vault's part): site to site through real daemons — one cloud
service, two providers registered in one vault (each with its own clouds), an agent on each
site, the recovery one holding replicas (replica_listen).

- pairing and mapping errors are refused with the reason: the same cloud, a cloud of the same
  provider, an unknown cloud, a cloud with no host holding replicas, mapping unpaired clouds
  or networks the clouds do not have, a VM whose NIC network is unmapped, and a VM no
  recovery host has room for (naming the space needed and the best free space);
- protecting a VM queues AcceptReplica for the recovery host (through its own provider) and
  EnableReplication with the replica target for the primary, under one pairing id; an agent
  that does not know AcceptReplica answers with a clear error instead of crashing;
- ReportReplica, called with the recovery agent's real certificate over a real TLS channel,
  makes the points appear in `asr point list`; another agent is refused; after protection is
  disabled (ReleaseReplica to the recovery host) the pairing is gone.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.hypervisor.cli import _nic
from asrclock import SystemClock
from asrerrors import PermissionDenied
from asrpb import control_pb2, replication_pb2, replication_pb2_grpc
from registration.link import CloudLink
from registration.state import load as load_identity
from tests.controlplane.sitefix import agent_vm, make_disk, qemu_img
from tests.harness import Cloud, Site, free_port, wait_for

VAULT = "contoso"
GIB = 1 << 30
TB = 1 << 40
SITE_A = [{"name": "gold", "hosts": ["hv01"], "sync": True, "networks": ["corp", "dmz"]},
          {"name": "bronze", "hosts": ["hv02"], "sync": True}]
SITE_B = [{"name": "silver", "hosts": ["hv11", "hv19"], "sync": True, "networks": ["corp-dr"]},
          {"name": "tin", "hosts": ["hv18"], "sync": True}]


def _vm(site: Site, host: str, name: str, nic: str, terabyte_disks: int = 0, os_size: str = "64M") -> None:
    d = site.root / host / "disks"
    d.mkdir(parents=True, exist_ok=True)
    os_disk = make_disk(d / f"{name}-os.vhdx", "vhdx", os_size)
    args = ["create", name, "--os-disk", str(os_disk), "--os", "windows-server-2019", "--nic", nic,
            "--data-disk", str(make_disk(d / f"{name}-data.vhdx", "vhdx", "32M"))]
    for i in range(terabyte_disks):   # sparse: more virtual size than the recovery host has free
        path = d / f"{name}-big{i}.vhdx"
        qemu_img("create", "-f", "vhdx", "-o", "subformat=dynamic", str(path), "1T")
        args += ["--data-disk", str(path)]
    res = agent_vm(site, host, *args)
    assert res.returncode == 0, res.stderr


def _refused(cloud: Cloud, code: int, *args: str) -> str:
    res = cloud.asr(*args, "--vault", VAULT, check=False)
    assert res.returncode == code, (args, res.returncode, res.stdout, res.stderr)
    assert f"ASR-{code:04d}" in res.stderr, res.stderr
    return res.stderr


def _commands(cloud: Cloud) -> list[tuple[str, str, control_pb2.Command]]:
    rows = cloud.sql("SELECT provider, state, body FROM commands ORDER BY created_at, id")
    out = []
    for provider, state, body in rows:
        cmd = control_pb2.Command()
        cmd.ParseFromString(body)
        out.append((provider, state, cmd))
    return out


def _pairing(cloud: Cloud) -> tuple[control_pb2.Command, control_pb2.Command, str, str]:
    """The newest AcceptReplica and EnableReplication, with the providers they went to."""
    cmds = _commands(cloud)
    accept = [(p, c) for p, _, c in cmds if c.WhichOneof("body") == "accept_replica"][-1]
    enable = [(p, c) for p, _, c in cmds if c.WhichOneof("body") == "enable_replication"][-1]
    return accept[1], enable[1], accept[0], enable[0]


@pytest.fixture
def sites(cloud: Cloud, tmp_path: Path) -> tuple[Site, Site, str]:
    cloud.asr("vault", "create", VAULT, "--region", "japaneast")
    a = Site(cloud, tmp_path / "a", VAULT)
    b = Site(cloud, tmp_path / "b", VAULT)
    a.root.mkdir()
    b.root.mkdir()
    a.new_key()
    b.key = a.key   # one vault, one registration key
    assert a.register_provider("prov-a").returncode == 0
    assert b.register_provider("prov-b").returncode == 0
    assert a.register_agent("hv01", provider="prov-a").returncode == 0
    # a host that serves replicas has the address primaries reach it by in its certificate
    assert b.register_agent("hv11", "--address", "127.0.0.1", provider="prov-b").returncode == 0
    replica = f"127.0.0.1:{free_port()}"
    a.start_provider("prov-a", clouds=SITE_A)
    b.start_provider("prov-b", clouds=SITE_B)
    a.start_agent("hv01")
    b.start_agent("hv11", replica_listen=replica, replica_dir=str(b.root / "hv11" / "replicas"))
    return a, b, replica


def _clouds(cloud: Cloud) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in cloud.asr_json("cloud", "list", "--vault", VAULT)}


def test_pairing_mapping_placement_commands_and_replica_reports(cloud: Cloud, sites: tuple[Site, Site, str]) -> None:
    a, b, replica = sites
    _vm(a, "hv01", "web01", "dhcp@corp")
    _vm(a, "hv01", "app01", "dhcp@dmz")
    free = shutil.disk_usage(b.root / "hv11").free
    # more virtual size than the recovery host's replica directory has free (sparse images)
    _vm(a, "hv01", "big01", "dhcp@corp", terabyte_disks=min(15, max(0, free - 100 * GIB) // TB + 1),
        os_size="100G")

    def synced() -> dict[str, dict[str, Any]] | None:
        c = _clouds(cloud)
        hosts = {h["name"]: h for h in c.get("silver", {}).get("host_details", [])}
        ok = hosts.get("hv11", {}).get("replica_address") == replica and c.get("gold", {}).get("vms") == 3
        return c if ok else None

    try:
        clouds = wait_for(synced, 90, interval=0.3, what="both sites synced, hv11 holding replicas")
    except AssertionError as exc:   # say what the daemons said
        logs = "\n".join(f"--- {p.name}\n{p.text()[-2000:]}" for p in cloud.procs.procs)
        raise AssertionError(f"{exc}\nclouds: {_clouds(cloud)}\n{logs}") from exc
    assert clouds["gold"]["networks"] == ["corp", "dmz"] and clouds["silver"]["networks"] == ["corp-dr"]
    assert clouds["gold"]["provider"] == "prov-a" and clouds["silver"]["provider"] == "prov-b"
    hv11 = next(h for h in clouds["silver"]["host_details"] if h["name"] == "hv11")
    assert hv11["replica_free_bytes"] > 0
    assert {h["name"]: h["replica_address"] for h in clouds["silver"]["host_details"]}["hv19"] == ""
    web = cloud.asr_json("vm", "show", "web01", "--vault", VAULT)
    assert [n["network"] for n in web["vm"]["nics"]] == ["corp"]

    # ---- pairing refusals, each with its reason ---------------------------------------------------
    err = _refused(cloud, 91, "cloud", "protect", "gold", "--target-cloud", "gold")
    assert "cloud 'gold' cannot be paired with itself" in err
    err = _refused(cloud, 91, "cloud", "protect", "gold", "--target-cloud", "bronze")
    assert "clouds 'gold' and 'bronze' are both served by provider 'prov-a'" in err
    err = _refused(cloud, 40, "cloud", "protect", "gold", "--target-cloud", "nowhere")
    assert "target cloud 'nowhere' is not synced" in err
    err = _refused(cloud, 91, "cloud", "protect", "gold", "--target-cloud", "tin")
    assert "no host of target cloud 'tin' holds replicas (hosts: hv18)" in err and "replica_listen" in err
    res = cloud.asr("cloud", "protect", "gold", "--vault", VAULT, "--storage", "s", "--target-cloud", "silver",
                    check=False)
    assert res.returncode == 2 and "not allowed with argument" in res.stderr
    err = _refused(cloud, 91, "network-mapping", "create", "--primary-cloud", "gold", "--primary-network", "corp",
                   "--recovery-cloud", "silver", "--recovery-network", "corp-dr")
    assert "cloud 'gold' is not paired with 'silver' (it is not paired with any cloud)" in err

    # ---- pairing and mapping ------------------------------------------------------------------------
    job = cloud.asr_json("cloud", "protect", "gold", "--vault", VAULT, "--target-cloud", "silver",
                         "--copy-frequency", "30s", "--retention-hours", "2", "--wait")
    assert job["state"] == "Succeeded", job
    gold = _clouds(cloud)["gold"]
    assert gold["protected"] and gold["policy"]["target_cloud"] == "silver" and gold["policy"]["storage"] == ""
    err = _refused(cloud, 40, "network-mapping", "create", "--primary-cloud", "gold", "--primary-network", "corp",
                   "--recovery-cloud", "silver", "--recovery-network", "corp")
    assert "network 'corp' is not a VM network of cloud 'silver' (its networks: corp-dr)" in err
    made = cloud.asr_json("network-mapping", "create", "--vault", VAULT, "--primary-cloud", "gold",
                          "--primary-network", "corp", "--recovery-cloud", "silver", "--recovery-network", "corp-dr")
    assert (made["primary_network"], made["recovery_network"]) == ("corp", "corp-dr")
    listed = cloud.asr_json("network-mapping", "list", "--vault", VAULT)
    assert [(m["primary_cloud"], m["primary_network"], m["recovery_cloud"], m["recovery_network"])
            for m in listed] == [("gold", "corp", "silver", "corp-dr")]
    history = {(e["code"], e["message"]) for e in cloud.asr_json("event", "list", "--vault", VAULT)}
    assert ("EVT-0011", "cloud gold (provider prov-a) paired with cloud silver (provider prov-b): site to site") \
        in history
    assert ("EVT-0012", "network gold/corp mapped to silver/corp-dr") in history

    # ---- protection refusals: unmapped network, no room, unusable recovery host ----------------------
    err = _refused(cloud, 92, "vm", "protect", "app01")
    assert "VM 'app01' connects to network 'dmz' of cloud 'gold', which is not mapped" in err
    err = _refused(cloud, 93, "vm", "protect", "big01")
    assert "no recovery host of cloud 'silver' has room for VM 'big01': it needs" in err
    assert "the most free is" in err and "on hv11" in err
    err = _refused(cloud, 93, "vm", "protect", "web01", "--recovery-host", "hv19")
    assert "host 'hv19' of cloud 'silver' holds no replicas" in err
    err = _refused(cloud, 93, "vm", "protect", "web01", "--recovery-host", "hv01")
    assert "host 'hv01' is not in recovery cloud 'silver'" in err

    # ---- the commands of a site-to-site protection ------------------------------------------------
    # hv11's agent does not know AcceptReplica yet: it answers with an error, the job fails
    first = cloud.asr_json("vm", "protect", "web01", "--vault", VAULT)["job_id"]
    ended = wait_for(lambda: (lambda j: j if j["state"] in ("Succeeded", "Failed") else None)(
        cloud.asr_json("job", "show", first, "--vault", VAULT)), 60, interval=0.3, what="first protection ended")
    accept, enable, to_b, to_a = _pairing(cloud)
    assert (to_b, to_a) == ("prov-b", "prov-a")
    assert accept.accept_replica.host == "hv11" and accept.accept_replica.source_host == "hv01"
    assert enable.enable_replication.host == "hv01"
    target = enable.enable_replication.replica_target
    assert (target.recovery_host, target.address) == ("hv11", replica)
    assert target.pairing_id and target.pairing_id == accept.accept_replica.pairing_id
    assert [d.virtual_size for d in accept.accept_replica.disks] == [64 << 20, 32 << 20]
    task = next(t for t in ended["tasks"] if "hv11" in t["name"] and "Accept" in t["name"])
    if ended["state"] == "Failed":   # an agent without the replica service says so, and goes on
        assert "does not know the command 'accept_replica'" in task["error"]["message"], task
    else:   # an agent with it (the i11-replica half) accepted: start again from unprotected
        assert ended["state"] == "Succeeded" and task["state"] == "Succeeded", ended
        cloud.asr_json("vm", "unprotect", "web01", "--vault", VAULT, "--force")
    assert b.agents["hv11"].alive() and a.agents["hv01"].alive()
    wait_for(lambda: cloud.asr_json("vm", "show", "web01", "--vault", VAULT)["protection_state"] == "Unprotected",
             30, what="web01 unprotected")

    # with the recovery agent stopped the AcceptReplica waits: the item is enabling, paired anew
    b.agents["hv11"].stop()
    cloud.asr_json("vm", "protect", "web01", "--vault", VAULT)
    accept2, enable2, _, _ = _pairing(cloud)
    pairing = accept2.accept_replica.pairing_id
    assert pairing == enable2.enable_replication.replica_target.pairing_id and pairing != target.pairing_id
    shown = cloud.asr_json("vm", "show", "web01", "--vault", VAULT)
    assert (shown["recovery_cloud"], shown["recovery_host"], shown["pairing_id"]) == ("silver", "hv11", pairing)
    table = cloud.asr("vm", "show", "web01", "--vault", VAULT).stdout
    assert f"host hv11 of cloud silver (site to site, pairing {pairing})" in table
    err = _refused(cloud, 42, "failover", "test", "web01")   # failover itself: tests/sitetosite/test_failover.py
    assert "test-failover is not allowed for VM 'web01' in state EnablingProtection" in err

    # ---- ReportReplica with the recovery agent's own certificate, over real TLS ----------------------
    def link(root: Path, host: str) -> tuple[CloudLink, Any]:
        lk = CloudLink(load_identity(str(root / host)), SystemClock(), None)
        return lk, replication_pb2_grpc.ReplicationStub(lk.channel)

    now = SystemClock().now()
    report = replication_pb2.ReplicaReport(
        vm_id=shown["vm"]["vm_id"], pairing_id=pairing, free_bytes=5 * GIB, health="Normal",
        last_received_at=now - 30,
        points=[replication_pb2.ReplicaPoint(point_id=f"rp{i}", created_at=now - 90 + 30 * i, stored_bytes=4096 * i,
                                             logical_bytes=96 << 20, epoch=1, app_consistent=i == 2)
                for i in range(3)])
    rec, rec_stub = link(b.root, "hv11")
    prim, prim_stub = link(a.root, "hv01")
    try:
        ack = rec.call(rec_stub.ReportReplica, report)
        assert ack.paired is True  # type: ignore[attr-defined]
        points = cloud.asr_json("point", "list", "web01", "--vault", VAULT)
        assert [(p["point_id"], p["kind"], p["location"]) for p in points] == [
            ("rp0", "crash", "hv11"), ("rp1", "crash", "hv11"), ("rp2", "app", "hv11")]
        assert "hv11" in cloud.asr("point", "list", "web01", "--vault", VAULT).stdout
        shown = cloud.asr_json("vm", "show", "web01", "--vault", VAULT)
        assert shown["replica_points"] == 3 and shown["replica_free_bytes"] == 5 * GIB
        assert shown["replication_health"] == "Normal" and 25 <= shown["rpo_seconds"] < 120

        # another agent of the vault (the primary itself) may not speak for the replica
        with pytest.raises(PermissionDenied, match="agent hv01 is not the recovery host of VM web01"):
            prim.call(prim_stub.ReportReplica, report)

        # a bad report (Warning) is an event; then protection goes: ReleaseReplica, the pairing is gone
        warn = replication_pb2.ReplicaReport()
        warn.CopyFrom(report)
        warn.health, warn.message = "Warning", "replica directory 95% full"
        assert rec.call(rec_stub.ReportReplica, warn).paired is True  # type: ignore[attr-defined]
        events = cloud.asr_json("event", "list", "--vault", VAULT, "--vm", "web01")
        assert any(e["code"] == "EVT-0013" and "Normal -> Warning: replica directory 95% full" in e["message"]
                   for e in events)
        cloud.asr_json("vm", "unprotect", "web01", "--vault", VAULT, "--force")
        p, c = [(p, c) for p, _, c in _commands(cloud) if c.WhichOneof("body") == "release_replica"][-1]
        assert (p, c.release_replica.host, c.release_replica.pairing_id) == ("prov-b", "hv11", pairing)
        wait_for(lambda: cloud.asr_json("vm", "show", "web01", "--vault", VAULT)["protection_state"] ==
                 "Unprotected", 30, what="protection disabled")
        assert rec.call(rec_stub.ReportReplica, report).paired is False  # type: ignore[attr-defined]
        res = cloud.asr("point", "list", "web01", "--vault", VAULT, check=False)
        assert res.returncode != 0 or "rp0" not in res.stdout
    finally:
        rec.close()
        prim.close()


def test_nic_network_syntax_old_and_new() -> None:
    """`--nic dhcp@corp` names the NIC's network; the old forms stay valid."""
    assert (_nic("dhcp").mode, _nic("dhcp").network) == ("dhcp", "")
    assert (_nic("DHCP@corp").mode, _nic("DHCP@corp").network) == ("dhcp", "corp")
    n = _nic("10.0.0.5/24@dmz")
    assert (n.mode, n.address, n.network) == ("static", "10.0.0.5/24", "dmz")
    for bad in ("dhcp@", "10.0.0.5@corp", "nonsense@corp"):
        with pytest.raises(argparse.ArgumentTypeError):
            _nic(bad)
