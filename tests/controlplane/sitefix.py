"""A registered site with a provider, two hosts in two clouds and VMs on real disk images."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.harness import BIN, Cloud, Site, run, wait_for

CLOUDS: list[dict[str, Any]] = [
    {"name": "gold", "hosts": ["hv01"], "sync": True},
    {"name": "silver", "hosts": ["hv02"], "sync": True},
]


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def make_disk(path: Path, fmt: str, size: str = "64M", subformat: str = "dynamic") -> Path:
    if fmt == "vhd":
        opts = f"subformat={subformat},force_size=on"
        qemu_img("create", "-f", "vpc", "-o", opts, str(path), size)
    elif fmt == "vhdx":
        qemu_img("create", "-f", "vhdx", "-o", f"subformat={subformat}", str(path), size)
    else:
        qemu_img("create", "-f", "raw", str(path), size)
    return path


def agent_vm(site: Site, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = site.root / f"{host}.toml"
    return run([str(BIN / "asr-agent"), "vm", *args, "--config", str(cfg)], env=site.cloud.env())


def create_vm(site: Site, host: str, name: str, data_fmt: str = "vhd", os_fmt: str = "vhdx",
              extra: tuple[str, ...] = ()) -> dict[str, Any]:
    d = site.root / host / "disks"
    d.mkdir(parents=True, exist_ok=True)
    os_disk = make_disk(d / f"{name}-os.{os_fmt}", os_fmt)
    data = make_disk(d / f"{name}-data.{data_fmt}", data_fmt, "32M")
    res = agent_vm(site, host, "create", name, "--os-disk", str(os_disk), "--data-disk", str(data),
                   "--os", "windows-server-2019", "--json", *extra)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def start_site(cloud: Cloud, root: Path, vault: str = "contoso", clouds: list[dict[str, Any]] | None = None,
               storage_region: str = "japaneast", encryption: bool = False, proxy: str = "") -> Site:
    cloud.asr("vault", "create", vault, "--region", "japaneast")
    cloud.asr("storage", "create", "store1", "--vault", vault, "--region", storage_region)
    site = Site(cloud, root, vault)
    site.new_key()
    res = site.register_provider("prov1", *(["--encryption"] if encryption else []), proxy=proxy)
    assert res.returncode == 0, res.stderr
    clouds = clouds or CLOUDS
    hosts: list[str] = [str(h) for c in clouds for h in list(c["hosts"])]
    for h in hosts:
        assert site.register_agent(h, proxy=proxy).returncode == 0
        site.agent_config(h, proxy=proxy)
    site.start_provider(clouds=clouds, proxy=proxy)
    for h in hosts:
        site.start_agent(h, proxy=proxy)
    return site


def vault_vms(cloud: Cloud, vault: str = "contoso") -> dict[str, dict[str, Any]]:
    return {v["vm"]["name"]: v for v in cloud.asr_json("vm", "list", "--vault", vault)}


# 60 s: a provider started on a loaded 2-core machine (the suite beside other work) once took
# more than 30 s to import, register its hosts and sync; the deadline only bounds a failure.
def wait_vms(cloud: Cloud, names: set[str], vault: str = "contoso", timeout: float = 60) -> dict[str, dict[str, Any]]:
    return dict(wait_for(lambda: (lambda v: v if set(v) == names else None)(vault_vms(cloud, vault)), timeout,
                         what=f"vault VMs == {sorted(names)}"))
