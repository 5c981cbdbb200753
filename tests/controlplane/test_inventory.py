"""Issue 3, must-show 1: the vault lists exactly the synced clouds, hosts and VMs, and follows
changes on a host without restarting anything."""

from __future__ import annotations

from pathlib import Path

from tests.controlplane.sitefix import agent_vm, create_vm, start_site, wait_vms
from tests.harness import Cloud


def test_two_hosts_two_clouds_sync_and_follow_changes(cloud: Cloud, tmp_path: Path) -> None:
    clouds = [{"name": "gold", "hosts": ["hv01"], "sync": True}, {"name": "silver", "hosts": ["hv02"], "sync": True},
              {"name": "lab", "hosts": ["hv03"], "sync": False}]
    site = start_site(cloud, tmp_path, clouds=clouds)
    create_vm(site, "hv01", "web01", data_fmt="vhd", os_fmt="vhdx")
    create_vm(site, "hv02", "db01", data_fmt="vhdx", os_fmt="vhdx")
    create_vm(site, "hv03", "lab01")  # its cloud is not synced
    vms = wait_vms(cloud, {"web01", "db01"})
    assert vms["web01"]["cloud"] == "gold" and vms["web01"]["vm"]["host"] == "hv01"
    assert vms["db01"]["cloud"] == "silver"
    disks = vms["web01"]["vm"]["disks"]
    assert [(d["format"], d["subformat"], int(d["virtual_size"])) for d in disks] == [
        ("vhdx", "dynamic", 64 << 20), ("vhd", "dynamic", 32 << 20)]
    assert all(Path(d["path"]).is_absolute() for d in disks)
    clouds_seen = {c["name"]: c for c in cloud.asr_json("cloud", "list", "--vault", "contoso")}
    assert set(clouds_seen) == {"gold", "silver"}
    assert clouds_seen["gold"]["hosts"] == ["hv01"] and clouds_seen["silver"]["hosts"] == ["hv02"]

    # added, changed, deleted on a host: the vault follows without restarts
    create_vm(site, "hv01", "app01")
    wait_vms(cloud, {"web01", "db01", "app01"})
    assert agent_vm(site, "hv01", "start", "web01").returncode == 0
    from tests.harness import wait_for

    wait_for(lambda: cloud.asr_json("vm", "show", "web01", "--vault", "contoso")["vm"]["power_state"] == "Running",
             30, what="power state synced")
    assert agent_vm(site, "hv02", "delete", "db01").returncode == 0
    wait_vms(cloud, {"web01", "app01"})
    assert site.provider_proc is not None and site.provider_proc.alive()

    # an operator's broken definition on hv01, met by a freshly started agent daemon: the
    # daemon keeps running, its other VMs stay in the vault, a new one still arrives, and
    # its log names the file (regression: the first inventory's list() raised and the
    # daemon stopped, every VM of the host out of inventory)
    site.agents["hv01"].stop()
    create_vm(site, "hv01", "app02")   # made while the daemon is down: only its inventory brings it
    (tmp_path / "hv01" / "vms" / "broken-1.json").write_text("{not json")
    agent = site.start_agent("hv01")
    wait_vms(cloud, {"web01", "app01", "app02"})
    assert agent.alive()
    wait_for(lambda: "broken-1.json" in agent.text(), 30, what="the broken definition in the agent's log")
