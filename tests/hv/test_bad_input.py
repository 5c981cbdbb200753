"""Bad input to the local hypervisor's command line is a coded error, never a traceback; NICs
are numbered from 0 like disks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.harness import BIN, run
from vmspec import NicSpec, VmSpec, protection_violations

from . import qemu

MiB = 1 << 20


def agent(site: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "asr-agent"), "vm", *args, "--config", str(site["config"])], timeout=60)


def refused(res: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert f"ASR-{code:04d}" in res.stderr and "Traceback" not in res.stderr + res.stdout, res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)


@pytest.fixture
def running(site: dict[str, Path]) -> str:
    res = agent(site, "create", "vm-1", "--os-disk", str(site["os"]), "--data-disk", str(site["data"]),
                "--os", "debian-12")
    assert res.returncode == 0, res.stderr
    assert agent(site, "start", "vm-1").returncode == 0
    return "vm-1"


@pytest.mark.parametrize("offset,length", [(0, 1 << 40), (4 * MiB - 10, 11), (4 * MiB, 1), (-1, 10), (0, -5)])
def test_write_outside_the_disk_is_refused_before_anything_is_written(site: dict[str, Path], running: str,
                                                                      offset: int, length: int) -> None:
    before = qemu.to_raw(site["os"], "vhdx-dynamic-1m", site["tmp"] / "before.raw")
    res = agent(site, "write", running, "--disk", "0", "--offset", str(offset), "--length", str(length),
                "--pattern", "7")
    refused(res, 2, "4194304")
    assert qemu.to_raw(site["os"], "vhdx-dynamic-1m", site["tmp"] / "after.raw") == before


def test_a_long_write_goes_in_pieces(site: dict[str, Path], running: str) -> None:
    res = agent(site, "write", running, "--disk", "0", "--offset", str(MiB - 3), "--length", str(3 * MiB),
                "--pattern", "0x5a")
    assert res.returncode == 0, res.stderr
    raw = qemu.to_raw(site["os"], "vhdx-dynamic-1m", site["tmp"] / "d.raw")
    assert raw[MiB - 4] == 0 and raw[MiB - 3:4 * MiB - 3] == b"\x5a" * (3 * MiB) and raw[4 * MiB - 3] == 0


@pytest.mark.parametrize("rate", ["nan", "inf", "-inf", "0", "-2"])
def test_workload_rate_must_be_finite_and_positive(site: dict[str, Path], running: str, rate: str) -> None:
    res = agent(site, "workload", running, f"--rate={rate}", "--duration", "5")
    refused(res, 2, "--rate", "greater than 0")
    assert "writes=" not in res.stdout


@pytest.mark.parametrize("duration", ["nan", "inf", "0", "-1"])
def test_workload_duration_must_be_finite_and_positive(site: dict[str, Path], running: str, duration: str) -> None:
    refused(agent(site, "workload", running, "--rate", "1", f"--duration={duration}"), 2, "--duration")


@pytest.mark.parametrize("name,content", [
    ("random.vhdx", lambda: os.urandom(MiB)),
    ("random.vhd", lambda: os.urandom(MiB)),
    ("signature-only.vhdx", lambda: b"vhdxfile" + os.urandom(MiB)),
    ("empty.vhdx", lambda: b""),
])
def test_a_file_that_is_not_the_image_its_name_says_is_refused(site: dict[str, Path], name: str,
                                                               content: object) -> None:
    path = site["tmp"] / name
    path.write_bytes(content())  # type: ignore[operator]
    res = agent(site, "create", "vm-2", "--os-disk", str(path), "--os", "debian-12")
    refused(res, 70, str(path))
    assert not (site["vm_dir"] / "vm-2.json").exists()
    # as a data disk too
    res = agent(site, "create", "vm-2", "--os-disk", str(site["os"]), "--data-disk", str(path), "--os", "debian-12")
    refused(res, 70, str(path))


def test_a_raw_image_is_still_a_raw_disk(site: dict[str, Path]) -> None:
    path = site["tmp"] / "data.img"
    path.write_bytes(os.urandom(MiB))
    res = agent(site, "create", "vm-3", "--os-disk", str(site["os"]), "--data-disk", str(path),
                "--os", "debian-12", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["disks"][1]["format"] == "raw"


def test_unsupported_guest_os_is_refused_at_create_in_protections_words(site: dict[str, Path]) -> None:
    res = agent(site, "create", "old-1", "--os-disk", str(site["os"]), "--os", "ubuntu-14.04")
    vm = VmSpec("old-1", 1, 2, 2048, "ubuntu-14.04", [], [NicSpec("dhcp")])
    [rule] = [v for v in protection_violations(vm) if v.startswith("guest OS")]
    refused(res, 43, rule)
    assert not (site["vm_dir"] / "old-1.json").exists()
    defn = site["tmp"] / "old.json"
    good = agent(site, "create", "new-1", "--os-disk", str(site["os"]), "--os", "ubuntu-22.04", "--json")
    assert good.returncode == 0, good.stderr
    doc = json.loads(good.stdout)
    assert agent(site, "delete", "new-1").returncode == 0
    doc.update(name="old-2", guest_os="ubuntu-14.04")
    defn.write_text(json.dumps(doc))
    refused(agent(site, "import", str(defn)), 43, rule)


def test_nics_are_numbered_from_0_everywhere(site: dict[str, Path]) -> None:
    res = agent(site, "create", "two-nics", "--os-disk", str(site["os"]), "--os", "debian-12",
                "--nic", "10.0.0.5/24", "--nic", "dhcp")
    assert res.returncode == 0, res.stderr
    shown = agent(site, "show", "two-nics").stdout
    assert "nic 0: static 10.0.0.5/24" in shown and "nic 1: dhcp" in shown, shown
    vm = VmSpec.from_dict(json.loads(agent(site, "show", "two-nics", "--json").stdout))
    assert protection_violations(vm, chosen_nic=0) == [
        "network: NIC 0 uses static addressing (10.0.0.5/24); DHCP IPv4 is required"]
    assert protection_violations(vm, chosen_nic=1) == []
    assert protection_violations(vm, chosen_nic=2) == [
        "network: chosen NIC 2 does not exist; the VM has 2 (NIC 0 to NIC 1)"]
    assert protection_violations(vm) == [
        "network: the VM has 2 NICs, NIC 0 to NIC 1; choose the one to replicate with --nic N "
        "(it must use DHCP IPv4)"]
