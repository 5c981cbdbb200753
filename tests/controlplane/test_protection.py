"""Issue 3, must-show 2–5: validation, protecting a cloud, commands while the provider is
down, and who may join a provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.settings import Settings
from asrclock import FakeClock, from_iso
from asrerrors import InvalidPolicy, UsageError
from asrpb import inventory_pb2
from chunkfmt import COMPRESSION
from cloudsvc.events import Events
from cloudsvc.inventory import dumps_policy, loads_policy
from cloudsvc.lifecycle import ProtectedItems
from cloudsvc.protection import describe_policy, validate_policy
from cloudsvc.schema import MIGRATIONS
from metastore.database import Database, open_database
from tests import pgserver
from tests.cli_schema import check_error
from tests.controlplane.sitefix import agent_vm, create_vm, make_disk, start_site, wait_vms
from tests.harness import BIN, Cloud, Site, run, wait_for
from vmspec import DiskSpec, NicSpec, VmSpec, protection_violations

GiB = 1 << 30


def _vm(**kw: Any) -> VmSpec:
    base: dict[str, Any] = dict(
        name="web01", generation=1, cpus=2, memory_mb=2048, guest_os="windows-server-2019",
        disks=[DiskSpec("/d/os.vhdx", "IDE", True, "vhdx", "dynamic", 40 * GiB)],
        nics=[NicSpec("dhcp")], power_state="Off")
    base.update(kw)
    return VmSpec(**base)


def _data(n: int, size: int = GiB, fmt: str = "vhd", ctl: str = "SCSI") -> list[DiskSpec]:
    return [DiskSpec(f"/d/data{i}.{fmt}", ctl, False, fmt, "dynamic", size) for i in range(n)]


OS = DiskSpec("/d/os.vhdx", "IDE", True, "vhdx", "dynamic", 40 * GiB)
RULES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("generation 2", {"generation": 2}, ["generation"]),
    ("no OS disk", {"disks": _data(1)}, ["OS disk"]),
    ("two OS disks", {"disks": [OS, DiskSpec("/d/os2.vhdx", "IDE", True, "vhdx", "dynamic", GiB)]}, ["OS disk"]),
    ("OS disk on SCSI", {"disks": [DiskSpec("/d/os.vhdx", "SCSI", True, "vhdx", "dynamic", GiB)]}, ["IDE"]),
    ("OS disk too big", {"disks": [DiskSpec("/d/os.vhdx", "IDE", True, "vhdx", "dynamic", 128 * GiB)]}, ["127"]),
    ("17 data disks", {"disks": [OS, *_data(17)]}, ["16"]),
    ("data disk too big", {"disks": [OS, *_data(1, 1025 * GiB)]}, ["1024"]),
    ("raw disk", {"disks": [OS, *_data(1, fmt="raw")]}, ["raw"]),
    ("no NIC", {"nics": []}, ["NIC"]),
    ("static NIC", {"nics": [NicSpec("static", "10.0.0.5/24")]}, ["DHCP"]),
    ("two NICs, none chosen", {"nics": [NicSpec("dhcp"), NicSpec("dhcp")]}, ["NIC"]),
    ("hyphen first", {"name": "-web"}, ["name"]),
    ("hyphen last", {"name": "web-"}, ["name"]),
    ("name too long", {"name": "a" * 64}, ["name"]),
    ("underscore in name", {"name": "web_01"}, ["name"]),
    ("32-bit OS", {"guest_os": "windows-7-x86"}, ["guest OS"]),
    ("unknown OS", {"guest_os": "plan9"}, ["guest OS"]),
]


@pytest.mark.parametrize("title,change,words", RULES, ids=[r[0] for r in RULES])
def test_each_validation_rule(title: str, change: dict[str, Any], words: list[str]) -> None:
    assert protection_violations(_vm()) == []
    v = protection_violations(_vm(**change))
    assert v, title
    for w in words:
        assert any(w.lower() in x.lower() for x in v), (title, v)


def test_every_violation_listed_at_once() -> None:
    bad = _vm(name="-bad", generation=2, guest_os="windows-7-x86", nics=[NicSpec("static", "10.0.0.5/24")],
              disks=[DiskSpec("/d/os.vhdx", "SCSI", True, "vhdx", "dynamic", 200 * GiB), *_data(1, fmt="raw")])
    assert len(protection_violations(bad)) >= 6
    assert protection_violations(_vm(nics=[NicSpec("dhcp"), NicSpec("static", "10.0.0.5/24")]), chosen_nic=0) == []


def _wait_job(cloud: Cloud, job: str, vault: str = "contoso") -> dict[str, Any]:
    return dict(wait_for(lambda: (lambda j: j if j["state"] in ("Succeeded", "Failed") else None)(
        cloud.asr_json("job", "show", job, "--vault", vault)), 60, what=f"job {job}"))


def _drop_compression(cloud: Cloud) -> None:
    """Rewrite every saved policy as a service from before policies had a compression wrote it."""
    db = open_database(cloud.database_url or str(cloud.data_dir / "metadata.db"), [], migrate=False)
    try:
        with db.write() as conn:
            for table, keys in (("policies", ("vault_id", "cloud")), ("protected_items", ("vault_id", "vm_id"))):
                for row in conn.execute(f"SELECT {keys[0]}, {keys[1]}, policy FROM {table}").fetchall():
                    doc = json.loads(row["policy"])
                    assert doc.pop("compression") == "strong"
                    conn.execute(f"UPDATE {table} SET policy=? WHERE {keys[0]}=? AND {keys[1]}=?",
                                 (json.dumps(doc), row[keys[0]], row[keys[1]]))
    finally:
        db.close()


def test_protect_cloud_pushes_policy_and_refuses_bad_values(cloud: Cloud, tmp_path: Path) -> None:
    site = start_site(cloud, tmp_path)
    create_vm(site, "hv01", "web01")
    wait_vms(cloud, {"web01"})
    # out-of-range values are refused naming the allowed values; nothing is saved
    for args, words in ((["--retention-hours", "25"], "0 to 24"), (["--app-consistent-hours", "13"], "1 to 12"),
                        (["--start", "01:15"], "30-minute"), (["--copy-frequency", "1m"], "30s, 5m, 15m"),
                        (["--storage", "nosuch"], "does not exist"),
                        (["--compression", "turbo"], "compression 'turbo' is not allowed; allowed: fast, balanced, "
                                                     "strong")):
        argv = ["cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1", *args]
        res = cloud.asr(*argv, check=False)
        assert res.returncode != 0 and words in res.stderr, (args, res.stderr)
    # the cloud refuses a compression it does not know (the CLI passes it through): InvalidPolicy,
    # naming the value, the allowed ones and what to do
    res = cloud.asr("cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1", "--compression",
                    "Strong", "--json", check=False)
    err = check_error(json.loads(res.stdout))["error"]
    assert res.returncode == 11 and err["code"] == "ASR-0011", res.stderr
    assert any("'Strong'" in d and "fast, balanced, strong" in d for d in err["details"]), err
    assert "save the policy again" in err["recommended_action"]
    assert cloud.db_rows("policies") == []
    res = cloud.asr("cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1", "--encrypt", check=False)
    assert res.returncode == 11 and "encryption" in res.stderr
    # a valid policy configures every host of the cloud, as a job with a task per host
    doc = cloud.asr_json("cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1",
                         "--copy-frequency", "30s", "--retention-hours", "2", "--app-consistent-hours", "1",
                         "--start", "now", "--compression", "strong", "--wait")
    assert doc["state"] == "Succeeded"
    assert [t["name"] for t in doc["tasks"]] == ["Configure host hv01"]
    assert all(t["state"] == "Succeeded" and from_iso(t["ended_at"]) >= from_iso(t["started_at"]) > 0
               for t in doc["tasks"])
    pol = json.loads((tmp_path / "hv01" / "host-policy.json").read_text())["policy"]
    assert (pol["copy_frequency_seconds"], pol["retention_hours"], pol["app_consistent_hours"]) == (30, 2, 1)
    assert pol["compression"] == "strong"
    assert not (tmp_path / "hv02" / "host-policy.json").exists()
    clouds = {c["name"]: c for c in cloud.asr_json("cloud", "list", "--vault", "contoso")}
    assert clouds["gold"]["protected"] and not clouds["silver"]["protected"]
    assert clouds["gold"]["policy"]["compression"] == "strong"

    # VM protection: refused with every violation, accepted when valid
    d = tmp_path / "hv01" / "disks"
    raw = make_disk(d / "bad-data.raw", "raw", "16M")
    os_disk = make_disk(d / "bad-os.vhdx", "vhdx")
    res = agent_vm(site, "hv01", "create", "bad-vm", "--os-disk", str(os_disk), "--data-disk", str(raw),
                   "--os", "windows-7-x86", "--generation", "2", "--nic", "10.0.0.5/24")
    assert res.returncode == 43 and "guest OS: 'windows-7-x86'" in res.stderr, res.stderr  # refused at once
    res = agent_vm(site, "hv01", "create", "bad-vm", "--os-disk", str(os_disk), "--data-disk", str(raw),
                   "--os", "debian-12", "--generation", "2", "--nic", "10.0.0.5/24")
    assert res.returncode == 0, res.stderr
    # a definition edited by hand (or by another tool) still reaches the cloud's rules
    defn = tmp_path / "hv01" / "vms" / "bad-vm.json"
    defn.write_text(defn.read_text().replace('"debian-12"', '"windows-7-x86"'))
    wait_for(lambda: wait_vms(cloud, {"web01", "bad-vm"})["bad-vm"]["vm"]["guest_os"] == "windows-7-x86", 30,
             what="the edited definition in the vault")
    res = cloud.asr("vm", "protect", "bad-vm", "--vault", "contoso", check=False)
    assert res.returncode == 43, res.stderr
    for w in ("generation", "raw", "guest OS", "DHCP"):
        assert w.lower() in res.stderr.lower(), (w, res.stderr)
    assert cloud.asr_json("vm", "show", "bad-vm", "--vault", "contoso")["protection_state"] == "Unprotected"
    job = cloud.asr_json("vm", "protect", "web01", "--vault", "contoso", "--wait")
    assert job["state"] == "Succeeded" and job["kind"] == "EnableProtection"
    shown = cloud.asr_json("vm", "show", "web01", "--vault", "contoso")
    assert shown["protection_state"] == "Protected" and "unprotect" in shown["allowed_operations"]
    vm_id = shown["vm"]["vm_id"]
    settings = json.loads((tmp_path / "hv01" / "replication" / f"{vm_id}.json").read_text())
    assert settings["vm_name"] == "web01"
    # the policy's compression: shown, and in the policy the agent replicates the VM with
    assert shown["policy"]["compression"] == "strong" and settings["policy"]["compression"] == "strong"
    assert "compression strong" in cloud.asr("vm", "show", "web01", "--vault", "contoso").stdout
    assert Settings(str(tmp_path / "hv01")).get(vm_id).policy.compression == "strong"  # type: ignore[union-attr]
    # a cloud and a VM protected before policies had a compression (their saved JSON without
    # it, in whichever engine the service runs on) read as balanced
    _drop_compression(cloud)
    assert cloud.asr_json("vm", "show", "web01", "--vault", "contoso")["policy"]["compression"] == "balanced"
    assert {c["name"]: c for c in cloud.asr_json("cloud", "list", "--vault", "contoso")}["gold"]["policy"][
        "compression"] == "balanced"
    assert "compression balanced" in cloud.asr("vm", "show", "web01", "--vault", "contoso").stdout
    res = cloud.asr("vm", "protect", "web01", "--vault", "contoso", check=False)
    assert res.returncode == 42 and "unprotect" in res.stderr
    # the VMM console path: the provider asks for protection of a VM of its own
    site.provider_config("prov1", clouds=[{"name": "gold", "hosts": ["hv01"], "sync": True},
                                          {"name": "silver", "hosts": ["hv02"], "sync": True}])
    create_vm(site, "hv01", "app01")
    wait_vms(cloud, {"web01", "bad-vm", "app01"})
    res = run([str(BIN / "asr-provider"), "vm", "protect", "app01", "--config", str(tmp_path / "prov1.toml"),
               "--json"], env=cloud.env())
    assert res.returncode == 0, res.stderr
    assert _wait_job(cloud, json.loads(res.stdout)["job_id"])["state"] == "Succeeded"
    job = cloud.asr_json("vm", "unprotect", "web01", "--vault", "contoso", "--wait")
    assert job["state"] == "Succeeded"
    assert not (tmp_path / "hv01" / "replication" / f"{vm_id}.json").exists()
    assert cloud.asr_json("vm", "show", "web01", "--vault", "contoso")["protection_state"] == "Unprotected"


def _applied(root: Path, host: str) -> list[dict[str, Any]]:
    d = root / host / "commands"
    return [json.loads(p.read_text()) | {"id": p.stem} for p in sorted(d.glob("*.json"))] if d.exists() else []


def test_commands_issued_while_provider_down_arrive_once(cloud: Cloud, tmp_path: Path) -> None:
    site = start_site(cloud, tmp_path)
    create_vm(site, "hv01", "web01")
    wait_vms(cloud, {"web01"})
    assert site.provider_proc is not None
    assert site.provider_proc.stop() == 0
    job = cloud.asr_json("cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1")["job_id"]
    assert cloud.asr_json("job", "show", job, "--vault", "contoso")["state"] == "InProgress"
    site.start_provider(clouds=[{"name": "gold", "hosts": ["hv01"], "sync": True},
                                {"name": "silver", "hosts": ["hv02"], "sync": True}])
    assert _wait_job(cloud, job)["state"] == "Succeeded"
    applied = [a for a in _applied(tmp_path, "hv01") if a["kind"] == "configure_host"]
    assert len(applied) == 1
    # the provider restarting again delivers nothing twice
    assert site.provider_proc.stop() == 0
    site.start_provider(clouds=[{"name": "gold", "hosts": ["hv01"], "sync": True}])
    job2 = cloud.asr_json("vm", "protect", "web01", "--vault", "contoso", "--wait")
    assert job2["state"] == "Succeeded"
    kinds = [a["kind"] for a in _applied(tmp_path, "hv01")]
    assert kinds.count("configure_host") == 1 and kinds.count("enable_replication") == 1
    rows = cloud.db_rows("commands")
    assert all(r[5] == "done" for r in rows), rows


def test_only_own_named_agents_join_the_provider(cloud: Cloud, tmp_path: Path) -> None:
    site = start_site(cloud, tmp_path, clouds=[{"name": "gold", "hosts": ["hv01"], "sync": True}])
    create_vm(site, "hv01", "web01")
    wait_vms(cloud, {"web01"})
    # an agent of this vault that the provider's configuration does not name
    assert site.register_agent("rogue").returncode == 0
    site.start_agent("rogue")
    create_vm(site, "rogue", "evil01")
    # an agent of another vault pointed at this provider
    cloud.asr("vault", "create", "other", "--region", "japaneast")
    other = Site(cloud, tmp_path / "other", "other")
    (tmp_path / "other").mkdir()
    other.provider_port = site.provider_port
    other.new_key()
    assert other.register_agent("hv01").returncode == 0
    other.start_agent("hv01")
    create_vm(other, "hv01", "spy01")
    for root, host in ((tmp_path, "rogue"), (tmp_path / "other", "hv01")):
        status = root / host / "status.json"

        def refused(status: Path = status) -> bool:
            if not status.exists():
                return False
            return bool(json.loads(status.read_text()).get("provider", {}).get("state") == "Unreachable")

        wait_for(refused, 30, what=f"{host} refused by the provider")
    log = site.provider_proc.text() if site.provider_proc else ""
    assert "another vault" in log and "not named" in log
    assert set(wait_vms(cloud, {"web01"})) == {"web01"}


# ---- the policy's compression (without a service) --------------------------------------------
def _policy(**kw: Any) -> inventory_pb2.Policy:
    base: dict[str, Any] = dict(storage="store1", copy_frequency_seconds=300, retention_hours=24, start="now")
    base.update(kw)
    return inventory_pb2.Policy(**base)


def test_compression_is_validated_with_the_other_policy_values() -> None:
    for name in ("", *COMPRESSION):   # "" (an older client) is the default
        validate_policy(_policy(compression=name))
        validate_policy(_policy(storage="", target_cloud="silver", compression=name))   # site to site too
    for bad in ("turbo", "Strong", "zstd-3", " balanced"):
        with pytest.raises(InvalidPolicy) as err:
            validate_policy(_policy(compression=bad))
        e = err.value
        assert (e.code, e.exit_code) == ("ASR-0011", 11) and isinstance(e, UsageError)
        assert e.details == (f"compression {bad!r} is not allowed; allowed: fast, balanced, strong (default "
                             "balanced)",)
        assert "save the policy again" in e.action
    # listed with the other values' problems, all at once
    with pytest.raises(InvalidPolicy) as err:
        validate_policy(_policy(retention_hours=25, compression="turbo"))
    assert len(err.value.details) == 2
    assert describe_policy(_policy(compression="strong")).endswith("compression strong")
    assert describe_policy(_policy()).endswith("compression balanced")


def _engine_db(engine: str, tmp_path: Path) -> Database:
    if engine == "postgresql":
        pgserver.require()
        return open_database(pgserver.server().new_database(), MIGRATIONS)
    return open_database(str(tmp_path / "metadata.db"), MIGRATIONS)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_policy_saved_without_compression_reads_as_balanced(engine: str, tmp_path: Path) -> None:
    db = _engine_db(engine, tmp_path)
    try:
        clock = FakeClock(1000.0)
        items = ProtectedItems(db, clock, Events(db, clock))
        old = json.dumps({"storage": "store1", "encrypt": False, "copy_frequency_seconds": 300,
                          "retention_hours": 24, "app_consistent_hours": 0, "start": "now", "cloud": "gold",
                          "target_cloud": ""})   # as saved before policies had a compression
        new = dumps_policy(_policy(compression="strong", cloud="gold"))
        with db.write() as conn:
            conn.execute("INSERT INTO vaults(id, name, region, created_at, ca_cert_pem, ca_key_pem)"
                         " VALUES ('v1', 'contoso', 'japaneast', 0, '', '')")
            conn.execute("INSERT INTO policies(vault_id, cloud, policy, created_at) VALUES ('v1','gold',?,0),"
                         " ('v1','silver',?,0)", (old, new))
            for vm_id, text in (("vm-old", old), ("vm-new", new)):
                items.create(conn, "v1", vm_id=vm_id, name=vm_id, cloud="gold", provider="p1", policy_json=text,
                             job_id="j1")
        saved = {r["cloud"]: loads_policy(r["policy"]) for r in db.query("SELECT cloud, policy FROM policies")}
        assert (saved["gold"].compression, saved["silver"].compression) == ("balanced", "strong")
        assert saved["gold"].copy_frequency_seconds == 300
        for vm_id, want in (("vm-old", "balanced"), ("vm-new", "strong")):
            item = items.get("v1", vm_id)
            assert item is not None and item.policy.compression == want
    finally:
        db.close()
