from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.hypervisor import LocalHypervisor

from . import qemu

MiB = 1 << 20


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """A vm_dir, an agent config naming it, and two disk images (VHDX OS disk, VHD data)."""
    vm_dir = tmp_path / "vms"
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\nvm_dir = "vms"\n')
    os_disk = tmp_path / "os.vhdx"
    qemu.create(os_disk, "vhdx-dynamic-1m", 4 * MiB)
    data_disk = tmp_path / "data.vhd"
    qemu.create(data_disk, "vhd-dynamic", 4 * MiB)
    return {"vm_dir": vm_dir, "config": config, "os": os_disk, "data": data_disk,
            "tmp": tmp_path}


@pytest.fixture
def hv(site: dict[str, Path]) -> Iterator[LocalHypervisor]:
    h = LocalHypervisor(str(site["vm_dir"]))
    yield h
    h.close()


@pytest.fixture
def vm(hv: LocalHypervisor, site: dict[str, Path]) -> str:
    hv.create("web-1", str(site["os"]), [str(site["data"])], guest_os="ubuntu-22.04")
    hv.start("web-1")
    return "web-1"
