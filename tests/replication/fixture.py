"""A cloud, a provider and one agent host (hv01) with a protected VM on qemu-made images.

The policy starts replication at a 30-minute boundary hours away, so the agent daemon's own
schedule stays idle and tests drive cycles with ``python -m agent.replication once`` (a real
process each time, which a test may kill -9).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chunkfmt import FLAG_GROUP, FRAME_MAGIC
from tests.controlplane.sitefix import agent_vm, wait_vms
from tests.harness import Cloud, Proc, Site, run, wait_for

MiB = 1 << 20
CLOUDS = [{"name": "gold", "hosts": ["hv01"], "sync": True}]


def qemu(*args: str) -> None:
    r = subprocess.run(list(args), capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "error" not in r.stdout.lower(), r.stdout + r.stderr


def later_start(hours: int = 3, now: float | None = None) -> str:
    """A policy start time ``hours`` after ``now`` (the daemons' clock: pass the injected
    clock's time when a test sets one, or the start may fall inside the test's fake day)."""
    t = (datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)) + timedelta(hours=hours)
    return f"{t.hour:02d}:{0 if t.minute < 30 else 30:02d}"


def _clock_now(cloud: Cloud) -> float | None:
    """The injected clock's time, when the test gave the daemons one."""
    return float(cloud.clock_file.read_text()) if cloud.clock_file else None


def serve_endpoints(cloud: Cloud, api: list[str], registration: list[str]) -> None:
    """Restart the cloud service with these public endpoints in its cloudsvc.toml (what key
    files will name)."""
    path = cloud.data_dir / "cloudsvc.toml"
    text = path.read_text()
    text = re.sub(r"(?m)^endpoints = .*$", f"endpoints = {json.dumps(api)}", text)
    text = re.sub(r"(?m)^registration_endpoints = .*$", f"registration_endpoints = {json.dumps(registration)}", text)
    path.write_text(text)
    cloud.restart()


@dataclass
class Protected:
    cloud: Cloud
    site: Site
    vm: str
    vm_id: str
    disks: list[tuple[Path, str]]   # (image, qemu format)

    @property
    def config(self) -> Path:
        return self.site.root / "hv01.toml"

    def once(self, *extra: str, check: bool = True) -> dict[str, Any]:
        res = run([sys.executable, "-m", "agent.replication", "once", self.vm_id, "--config", str(self.config),
                   *extra], env=self.cloud.env(), timeout=300)
        if check:
            assert res.returncode == 0, res.stderr + res.stdout
            return dict(json.loads(res.stdout.strip().splitlines()[-1]))
        return {"returncode": res.returncode, "stderr": res.stderr}

    def start_once(self, *extra: str) -> Proc:
        return self.cloud.procs.start("repl-once", [sys.executable, "-m", "agent.replication", "once", self.vm_id,
                                                    "--config", str(self.config), *extra], env=self.cloud.env())

    def start_paused_once(self, messages: int, gate: Path) -> Proc:
        """Start a cycle that stops inside its PutChunks stream after ``messages`` messages
        (the test pause of agent/replication/cycle.py) and wait until it has; it goes on once
        ``gate/go`` exists."""
        gate.mkdir()
        os.environ["ASR_TEST_UPLOAD_PAUSE"] = f"{messages}:{gate}"
        try:
            proc = self.start_once()
        finally:
            os.environ.pop("ASR_TEST_UPLOAD_PAUSE")

        def paused() -> bool:
            if not proc.alive():
                raise AssertionError(f"the cycle ended before its upload paused: {proc.text()}")
            return (gate / "paused").exists()

        wait_for(paused, 120, what="the cycle to pause inside its upload")
        return proc

    def write(self, disk: int, offset: int, length: int, pattern: int) -> None:
        res = agent_vm(self.site, "hv01", "write", self.vm, "--disk", str(disk), "--offset", str(offset),
                       "--length", str(length), "--pattern", str(pattern))
        assert res.returncode == 0, res.stderr

    def points(self) -> list[dict[str, Any]]:
        return list(self.cloud.asr_json("point", "list", self.vm, "--vault", "contoso"))

    def export(self, point: str, disk: int, out: Path, *extra: str) -> Path:
        self.cloud.asr("point", "export", self.vm, point, "--disk", str(disk), "--out", str(out),
                       "--vault", "contoso", *extra)
        return out

    def verify(self, point: str) -> dict[str, Any]:
        res = self.cloud.asr("point", "verify", self.vm, point, "--vault", "contoso", "--json", check=False)
        return dict(json.loads(res.stdout))

    def snapshot_raw(self, out_dir: Path, tag: str) -> list[Path]:
        """The VM's disks now, as raw files (qemu-img convert: the independent judge)."""
        outs = []
        for i, (img, fmt) in enumerate(self.disks):
            out = out_dir / f"{tag}-disk{i}.raw"
            qemu("qemu-img", "convert", "-f", fmt, "-O", "raw", str(img), str(out))
            outs.append(out)
        return outs


def protect(cloud: Cloud, root: Path, *, encrypt: bool = False, os_size: int = 8 * MiB, data_size: int = 4 * MiB,
            retention_hours: int = 2, app_hours: int = 0, start: str | None = None,
            fill: bool = True, blob_connection: str = "", quiesce_hook: list[str] | None = None,
            proxy: str = "", compression: str = "") -> Protected:
    """``proxy``: the provider and the agent register and run through this proxy URL;
    ``compression``: the policy's (default: the cloud's default)."""
    cloud.asr("vault", "create", "contoso", "--region", "japaneast")
    blob = ["--backend", "blob", "--blob-connection-string", blob_connection] if blob_connection else []
    cloud.asr("storage", "create", "store1", "--vault", "contoso", "--region", "japaneast", *blob)
    site = Site(cloud, root, "contoso")
    site.new_key()
    res = site.register_provider("prov1", *(["--encryption"] if encrypt else []), proxy=proxy)
    assert res.returncode == 0, res.stderr
    res = site.register_agent("hv01", proxy=proxy)
    assert res.returncode == 0, res.stderr
    site.agent_config("hv01", proxy=proxy)
    d = root / "hv01" / "disks"
    d.mkdir(parents=True, exist_ok=True)
    os_disk, data_disk = d / "vm1-os.vhdx", d / "vm1-data.vhd"
    qemu("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", str(os_disk), str(os_size))
    qemu("qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on", str(data_disk),
         str(data_size))
    if fill:
        qemu("qemu-io", "-f", "vhdx", "-c", "write -P 0xab 0 1M", "-c", "write -P 0x11 3M 192k",
             "-c", f"write -P 0x5c {os_size - 64 * 1024} 64k", str(os_disk))
        qemu("qemu-io", "-f", "vpc", "-c", "write -P 0xcd 512k 256k", "-c", "write -P 0x01 2M 4k", str(data_disk))
    hook = ["--quiesce-hook", *quiesce_hook] if quiesce_hook else []
    res = agent_vm(site, "hv01", "create", "vm1", "--os-disk", str(os_disk), "--data-disk", str(data_disk),
                   "--os", "windows-server-2019", "--json", *hook)
    assert res.returncode == 0, res.stderr
    vm_id = json.loads(res.stdout)["vm_id"]
    assert agent_vm(site, "hv01", "start", "vm1").returncode == 0
    # the daemons start after the VM exists (the agent must not see a half-created VM)
    site.start_provider(clouds=CLOUDS, proxy=proxy)
    site.start_agent("hv01", proxy=proxy)
    wait_vms(cloud, {"vm1"})
    args = ["cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1", "--copy-frequency", "30s",
            "--retention-hours", str(retention_hours), "--app-consistent-hours", str(app_hours),
            "--start", start or later_start(now=_clock_now(cloud)), "--wait"]
    if encrypt:
        args.append("--encrypt")
    if compression:
        args += ["--compression", compression]
    assert cloud.asr_json(*args)["state"] == "Succeeded"
    assert cloud.asr_json("vm", "protect", "vm1", "--vault", "contoso", "--wait")["state"] == "Succeeded"
    wait_for(lambda: (root / "hv01" / "replication" / f"{vm_id}.json").exists(), 30, what="replication settings")
    return Protected(cloud, site, "vm1", vm_id, [(os_disk, "vhdx"), (data_disk, "vpc")])


def group_frames(root: Path, skip: str = "") -> int:
    """Group frames in the files under ``root`` (a store's packs), by their header's group
    flag and member count; files under a directory named ``skip`` are not read."""
    count = 0
    for path in root.rglob("*"):
        if not path.is_file() or (skip and skip in path.relative_to(root).parts):
            continue
        data = path.read_bytes()
        at = data.find(FRAME_MAGIC)
        while at >= 0:
            if at + 8 <= len(data):
                flags, members = struct.unpack_from("<BH", data, at + 5)
                if flags & FLAG_GROUP and 2 <= members <= 256:
                    count += 1
            at = data.find(FRAME_MAGIC, at + 1)
    return count
