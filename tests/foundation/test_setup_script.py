"""``deploy/setup.sh`` waits for another apt run instead of failing at once, and does nothing
the second time. The real script runs in a copy of the checkout whose venv and Azurite are
already there, with stand-ins for apt-get, dpkg and systemctl on PATH that record their calls
(the first ``apt-get update`` finds the lists lock taken, as apt 2.6 reports it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import REPO

FAKE_APT = """#!/bin/sh
echo "apt-get $*" >> "$CALLS"
case "$*" in
  *" update"*)
    if [ ! -e "$STATE/update-tried" ]; then
      touch "$STATE/update-tried"
      echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2
      echo "E: Unable to lock directory /var/lib/apt/lists/" >&2
      exit 100
    fi ;;
  *" install "*)
    case "$*" in
      *"DPkg::Lock::Timeout=120"*) ;;
      *) echo "E: Could not get lock /var/lib/dpkg/lock-frontend" >&2; exit 100 ;;
    esac
    touch "$STATE/installed" ;;
esac
exit 0
"""
# dpkg -s: everything is installed except qemu-utils, until apt-get install ran
FAKE_DPKG = """#!/bin/sh
[ "$2" = qemu-utils ] && [ ! -e "$STATE/installed" ] && exit 1
exit 0
"""


def _exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def test_setup_waits_for_the_apt_lock_and_is_idempotent(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the apt part of setup.sh runs as root only")
    checkout, bin_dir, state = tmp_path / "checkout", tmp_path / "bin", tmp_path / "state"
    state.mkdir()
    (checkout / "deploy").mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "setup.sh", checkout / "deploy" / "setup.sh")
    _exe(checkout / ".venv" / "bin" / "python", "#!/bin/sh\nexit 0\n")
    _exe(checkout / ".venv" / "bin" / "pip", "#!/bin/sh\nexit 0\n")
    _exe(checkout / ".tools" / "node_modules" / ".bin" / "azurite-blob", "#!/bin/sh\nexit 0\n")
    _exe(bin_dir / "apt-get", FAKE_APT)
    _exe(bin_dir / "dpkg", FAKE_DPKG)
    _exe(bin_dir / "systemctl", "#!/bin/sh\nexit 0\n")
    _exe(bin_dir / "npm", "#!/bin/sh\nexit 0\n")
    calls = tmp_path / "calls"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "STATE": str(state), "HOME": str(tmp_path)}

    def setup() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(checkout / "deploy" / "setup.sh")], env=env, capture_output=True,
                              text=True, timeout=300, check=False)

    first = setup()
    assert first.returncode == 0, first.stderr
    lines = calls.read_text().splitlines()
    # the update found the lock taken and was tried again; the install waits for the dpkg lock
    assert [line for line in lines if line.endswith(" update -qq")] == \
        ["apt-get -o DPkg::Lock::Timeout=120 update -qq"] * 2, lines
    installs = [line for line in lines if " install " in line]
    assert len(installs) == 1 and "-o DPkg::Lock::Timeout=120" in installs[0] and "qemu-utils" in installs[0]
    calls.unlink()
    second = setup()
    assert second.returncode == 0, second.stderr
    assert not calls.exists()  # nothing left to install: apt is not run at all
