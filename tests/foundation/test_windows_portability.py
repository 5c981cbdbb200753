"""Issue 12, must-show 5 (second half): the provider and the agent import and run without the
POSIX-only modules and calls (``tests/foundation/without_posix.py``: no ``fcntl``, no
``os.pread``/``os.pwrite``/``os.preadv``, Windows' ``msvcrt`` locking instead). Registration,
the local hypervisor's VM commands, both daemons and three replication cycles (initial,
incremental, resync by fingerprints) run that way against a real cloud service, and the last
point exports exactly the disks (qemu-img compare)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.controlplane.sitefix import wait_vms
from tests.harness import REPO, Cloud, Proc, Site, base_env, run, wait_for
from tests.replication.fixture import CLOUDS, MiB, later_start, qemu

WITHOUT_POSIX = REPO / "tests" / "foundation" / "without_posix.py"


def as_on_windows(module: str, *args: str) -> list[str]:
    return [sys.executable, str(WITHOUT_POSIX), module, *args]


def test_the_refusals_are_in_force(tmp_path: Path) -> None:
    (tmp_path / "probe_posix.py").write_text(
        "import os\n"
        "left = [n for n in ('pread', 'pwrite', 'preadv') if hasattr(os, n)]\n"
        "try:\n    import fcntl\nexcept ImportError:\n    fcntl = None\n"
        "import msvcrt\n"
        "print(left, fcntl, msvcrt.LK_NBLCK)\n")
    res = subprocess.run(as_on_windows("probe_posix"), env=base_env(PYTHONPATH=str(tmp_path)), capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[] None 2"


def test_agent_and_provider_replicate_without_posix(cloud: Cloud, tmp_path: Path) -> None:
    root = tmp_path / "site"
    cloud.asr("vault", "create", "contoso", "--region", "japaneast")
    cloud.asr("storage", "create", "store1", "--vault", "contoso", "--region", "japaneast")
    root.mkdir()
    site = Site(cloud, root, "contoso")
    key = site.new_key()

    def windows(module: str, *args: str) -> dict[str, object]:
        res = run(as_on_windows(module, *args), env=cloud.env(), timeout=300)
        assert res.returncode == 0, f"{module} {' '.join(args)}: {res.stderr}{res.stdout}"
        assert "Traceback" not in res.stderr, res.stderr
        out = res.stdout.strip()
        return dict(json.loads(out)) if out.startswith("{") else {}

    windows("provider.cli", "register", "--key-file", str(key), "--name", "prov1", "--state-dir", str(root / "prov1"))
    windows("agent.cli", "register", "--key-file", str(key), "--host", "hv01", "--provider",
            f"127.0.0.1:{site.provider_port}", "--provider-name", "prov1", "--state-dir", str(root / "hv01"))
    cfg = str(site.agent_config("hv01"))
    disks = root / "hv01" / "disks"
    disks.mkdir(parents=True)
    os_disk, data_disk = disks / "vm1-os.vhdx", disks / "vm1-data.vhd"
    qemu("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", str(os_disk),
         str(8 * MiB))
    qemu("qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on", str(data_disk),
         str(4 * MiB))
    qemu("qemu-io", "-f", "vhdx", "-c", "write -P 0xab 0 1M", "-c", "write -P 0x11 3M 192k", str(os_disk))
    qemu("qemu-io", "-f", "vpc", "-c", "write -P 0xcd 512k 256k", str(data_disk))
    vm_id = str(windows("agent.cli", "vm", "create", "vm1", "--config", cfg, "--os-disk", str(os_disk),
                        "--data-disk", str(data_disk), "--os", "windows-server-2019", "--json")["vm_id"])
    windows("agent.cli", "vm", "start", "vm1", "--config", cfg)

    daemons: list[Proc] = [
        cloud.procs.start("provider-nix", as_on_windows("provider.cli", "run", "--config",
                                                        str(site.provider_config("prov1", clouds=CLOUDS))),
                          env=cloud.env()),
        cloud.procs.start("agent-nix", as_on_windows("agent.cli", "run", "--config", cfg), env=cloud.env()),
    ]
    wait_vms(cloud, {"vm1"})
    assert cloud.asr_json("cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1",
                          "--copy-frequency", "30s", "--start", later_start(), "--wait")["state"] == "Succeeded"
    assert cloud.asr_json("vm", "protect", "vm1", "--vault", "contoso", "--wait")["state"] == "Succeeded"
    wait_for(lambda: (root / "hv01" / "replication" / f"{vm_id}.json").exists(), 30, what="replication settings")

    first = windows("agent.replication", "once", vm_id, "--config", cfg)
    assert first["modes"] == ["initial"] * 2, first
    windows("agent.cli", "vm", "write", "vm1", "--config", cfg, "--disk", "0", "--offset", str(6 * 65536 - 100),
            "--length", "5000", "--pattern", "66")
    second = windows("agent.replication", "once", vm_id, "--config", cfg)
    assert second["modes"] == ["incremental"] * 2 and second["blocks_changed"] == 2, second
    run([sys.executable, "-c", "import sys; from agent.hypervisor import LocalHypervisor; "
         "LocalHypervisor(sys.argv[1]).reset_tracking('vm1')", str(root / "hv01" / "vms")])
    windows("agent.cli", "vm", "write", "vm1", "--config", cfg, "--disk", "1", "--offset", str(2 * MiB),
            "--length", "65536", "--pattern", "35")
    third = windows("agent.replication", "once", vm_id, "--config", cfg)
    assert third["modes"] == ["resync"] * 2 and third["resync_by"] == ["fingerprints"] * 2, third
    assert third["blocks_changed"] == 1, third

    for disk, (image, fmt) in enumerate(((os_disk, "vhdx"), (data_disk, "vpc"))):
        out = tmp_path / f"disk{disk}.raw"
        cloud.asr("point", "export", "vm1", str(third["point_id"]), "--disk", str(disk), "--out", str(out),
                  "--vault", "contoso")
        cmp = subprocess.run(["qemu-img", "compare", "-f", fmt, "-F", "raw", str(image), str(out)],
                             capture_output=True, text=True, check=False)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    for proc in daemons:
        assert proc.alive(), proc.text()
        assert proc.stop() == 0, proc.text()
        assert "Traceback" not in proc.text(), proc.text()
