"""Two VMM sites in one vault, as real daemons: site A (provider prov-a, cloud gold, host hv01)
protects to site B (provider prov-b, cloud silver, hosts hv11 holding replicas and hv12), with
network corp of gold mapped to corp-dr of silver. Cycles of the primary are run on demand
(``python -m agent.replication once``); the policy's schedule starts hours later."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent.hypervisor import LocalHypervisor
from tests.controlplane.sitefix import agent_vm, make_disk
from tests.harness import Cloud, Site, free_port, run, wait_for
from tests.replication.fixture import MiB, later_start, qemu

VAULT = "contoso"
SITE_A = [{"name": "gold", "hosts": ["hv01"], "sync": True, "networks": ["corp"]},
          {"name": "bronze", "hosts": ["hv02"], "sync": True}]   # protected to the vault's storage
SITE_B = [{"name": "silver", "hosts": ["hv11", "hv12"], "sync": True, "networks": ["corp-dr", "lab"]}]


def compare(a: Path | str, fmt_a: str, b: Path | str, fmt_b: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
                          capture_output=True, text=True, check=False)


class TwoSites:
    """``b_host``: where site B's provider listens; ``replica_ip``: the address hv11 serves
    replicas on (its certificate carries it); ``hv11_wrap``: a command hv11 runs under (a
    network namespace, tests/netns.py). The defaults keep every daemon on 127.0.0.1."""

    def __init__(self, cloud: Cloud, root: Path, os_size: int = 16 * MiB, data_size: int = 8 * MiB,
                 b_host: str = "127.0.0.1", replica_ip: str = "127.0.0.1", hv11_wrap: tuple[str, ...] = ()) -> None:
        self.cloud = cloud
        self.root = root
        self.hv11_wrap = hv11_wrap
        cloud.asr("vault", "create", VAULT, "--region", "japaneast")
        self.a = Site(cloud, root / "a", VAULT)
        self.b = Site(cloud, root / "b", VAULT, host=b_host)
        self.a.root.mkdir()
        self.b.root.mkdir()
        self.a.new_key()
        self.b.key = self.a.key
        for site, prov in ((self.a, "prov-a"), (self.b, "prov-b")):
            # the provider's certificate carries the address its agents dial
            res = site.register_provider(prov, *(("--address", site.host) if site.host != "127.0.0.1" else ()))
            assert res.returncode == 0, res.stderr
        for site, host, extra in ((self.a, "hv01", ()), (self.a, "hv02", ()),
                                  (self.b, "hv11", ("--address", replica_ip)), (self.b, "hv12", ())):
            res = site.register_agent(host, *extra, provider="prov-a" if site is self.a else "prov-b")
            assert res.returncode == 0, res.stderr
        self.replica_address = f"{replica_ip}:{free_port()}"
        self.replica_dir = self.b.root / "hv11" / "replicas"
        self.a.start_provider("prov-a", clouds=SITE_A)
        self.b.start_provider("prov-b", clouds=SITE_B)
        self.a.start_agent("hv01")
        self.a.start_agent("hv02")
        self.start_recovery_agent()
        self.b.start_agent("hv12")
        # the protected VM: a VHDX OS disk and a VHD data disk with content, NIC on corp
        d = self.a.root / "hv01" / "disks"
        d.mkdir(parents=True)
        self.disks = [(d / "web01-os.vhdx", "vhdx"), (d / "web01-data.vhd", "vpc")]
        qemu("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M",
             str(self.disks[0][0]), str(os_size))
        make_disk(self.disks[1][0], "vhd", str(data_size))
        qemu("qemu-io", "-f", "vhdx", "-c", "write -P 0xab 0 1M", str(self.disks[0][0]))
        qemu("qemu-io", "-f", "vpc", "-c", "write -P 0xcd 512k 256k", str(self.disks[1][0]))
        res = agent_vm(self.a, "hv01", "create", "web01", "--os-disk", str(self.disks[0][0]), "--data-disk",
                       str(self.disks[1][0]), "--os", "windows-server-2019", "--nic", "dhcp@corp", "--json")
        assert res.returncode == 0, res.stderr
        self.vm_id = json.loads(res.stdout)["vm_id"]
        assert agent_vm(self.a, "hv01", "start", "web01").returncode == 0
        self.hv01 = LocalHypervisor(str(self.a.root / "hv01" / "vms"))
        self.hv11 = LocalHypervisor(str(self.b.root / "hv11" / "vms"))

    def start_recovery_agent(self) -> None:
        self.b.start_agent("hv11", wrap=self.hv11_wrap, replica_listen=self.replica_address,
                           replica_dir=str(self.replica_dir))

    def later_start(self) -> str:
        """A start hours away on the daemons' clock (the injected one, when the test gave one)."""
        clock = self.cloud.clock_file
        return later_start(now=float(clock.read_text()) if clock else None)

    def asr(self, *args: str) -> Any:
        return self.cloud.asr_json(*args, "--vault", VAULT)

    def job(self, *args: str) -> dict[str, Any]:
        """Run an operation with --wait; the job as it ended."""
        return dict(self.cloud.asr_json(*args, "--vault", VAULT, "--wait", "--timeout", "240"))

    def protect(self, start: str = "", compression: str = "") -> None:
        """Protect web01 to silver, copying every 30 s from ``start`` (default: hours away, so
        cycles run only on demand, :meth:`once`; ``now``: the primary's schedule runs them),
        with the policy's ``compression`` (default: the cloud's)."""
        def synced() -> bool:
            clouds = {c["name"]: c for c in self.asr("cloud", "list")}
            hosts = {h["name"]: h for h in clouds.get("silver", {}).get("host_details", [])}
            return hosts.get("hv11", {}).get("replica_address") == self.replica_address and \
                clouds.get("gold", {}).get("vms") == 1 and "bronze" in clouds

        wait_for(synced, 90, interval=0.3, what="both sites synced, hv11 holding replicas")
        job = self.job("cloud", "protect", "gold", "--target-cloud", "silver", "--copy-frequency", "30s",
                       "--retention-hours", "2", "--start", start or self.later_start(),
                       *(["--compression", compression] if compression else []))
        assert job["state"] == "Succeeded", job
        self.asr("network-mapping", "create", "--primary-cloud", "gold", "--primary-network", "corp",
                 "--recovery-cloud", "silver", "--recovery-network", "corp-dr")
        job = self.job("vm", "protect", "web01")
        assert job["state"] == "Succeeded", job

    def protect_vault_vm(self) -> str:
        """app01 on hv02 (cloud bronze), protected to the vault's storage account; its id."""
        self.cloud.asr("storage", "create", "store1", "--vault", VAULT, "--region", "japaneast")
        d = self.a.root / "hv02" / "disks"
        d.mkdir(parents=True)
        disk = make_disk(d / "app01-os.vhdx", "vhdx", "8M")
        qemu("qemu-io", "-f", "vhdx", "-c", "write -P 0x21 0 256k", str(disk))
        res = agent_vm(self.a, "hv02", "create", "app01", "--os-disk", str(disk), "--os", "windows-server-2019",
                       "--json")
        assert res.returncode == 0, res.stderr
        app_id = str(json.loads(res.stdout)["vm_id"])
        assert agent_vm(self.a, "hv02", "start", "app01").returncode == 0
        wait_for(lambda: any(v["vm"]["name"] == "app01" for v in self.asr("vm", "list")), 60, interval=0.3,
                 what="app01 synced")
        job = self.job("cloud", "protect", "bronze", "--storage", "store1", "--copy-frequency", "30s",
                       "--start", later_start())
        assert job["state"] == "Succeeded", job
        assert self.job("vm", "protect", "app01")["state"] == "Succeeded"
        res = run([sys.executable, "-m", "agent.replication", "once", app_id, "--config",
                   str(self.a.root / "hv02.toml")], env=self.cloud.env(), timeout=300)
        assert res.returncode == 0, res.stderr + res.stdout
        return app_id

    def once(self) -> dict[str, Any]:
        """One cycle of the primary, to the recovery host; waits until the vault lists its point."""
        res = run([sys.executable, "-m", "agent.replication", "once", self.vm_id, "--config",
                   str(self.a.root / "hv01.toml")], env=self.cloud.env(), timeout=300)
        assert res.returncode == 0, res.stderr + res.stdout
        out = dict(json.loads(res.stdout.strip().splitlines()[-1]))
        wait_for(lambda: out["point_id"] in {p["point_id"] for p in self.asr("point", "list", "web01")}, 60,
                 interval=0.3, what=f"the vault to list point {out['point_id']}")
        return out

    def state(self) -> dict[str, Any]:
        return dict(self.asr("vm", "show", "web01"))

    def applied(self) -> str:
        try:
            st = json.loads((self.replica_dir / self.vm_id / "applied.json").read_text())
        except (FileNotFoundError, ValueError):
            return ""
        return "" if st.get("applying") else str(st.get("point_id", ""))

    def write(self, hv: LocalHypervisor, name: str, disk: int, offset: int, length: int, byte: int) -> None:
        hv.write(name, disk, offset, bytes([byte]) * length)

    def raw(self, name: str) -> list[Path]:
        """The source disks now, as raw files."""
        out = []
        for i, (src, fmt) in enumerate(self.disks):
            path = self.root / f"{name}-disk{i}.raw"
            qemu("qemu-img", "convert", "-f", fmt, "-O", "raw", str(src), str(path))
            out.append(path)
        return out

    def equal(self, paths: list[str], fmt: str, expected: list[Path], expected_fmt: str = "raw") -> None:
        for p, e in zip(paths, expected, strict=True):
            r = compare(p, fmt, e, expected_fmt)
            assert r.returncode == 0, f"{p} != {e}: {r.stdout}{r.stderr}"
