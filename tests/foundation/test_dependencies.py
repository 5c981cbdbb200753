"""Dependencies: the protobuf bounds match the generated stubs, the lock files agree with
pyproject.toml (every requirement pinned within its bounds, with hashes, the development
lock keeping the runtime pins), and this environment runs the locked versions. After a
dependency change: ``bash deploy/lock.sh``, then ``bash deploy/setup.sh``."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.harness import REPO

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def project() -> dict[str, list[Requirement]]:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {"runtime": [Requirement(r) for r in doc["dependencies"]],
            "dev": [Requirement(r) for r in doc["optional-dependencies"]["dev"]]}


def lock(name: str) -> dict[str, tuple[Version, str, int]]:
    """package -> (pinned version, marker, number of hashes)."""
    pins: dict[str, tuple[Version, str, int]] = {}
    current = ""
    for line in (REPO / name).read_text().splitlines():
        m = PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            pins[current] = (Version(m.group(2)), (m.group(3) or "").strip(), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            v, marker, n = pins[current]
            pins[current] = (v, marker, n + 1)
    return pins


def test_protobuf_bounds_match_the_generated_stubs() -> None:
    generated = {Version(m) for f in (REPO / "asrpb").glob("*_pb2.py")
                 for m in re.findall(r"^# Protobuf Python Version: (\S+)$", f.read_text(), re.M)}
    assert len(generated) == 1, generated
    [gen] = generated
    [pb] = [r for r in project()["runtime"] if r.name == "protobuf"]
    # the stubs refuse an older runtime and another major version (runtime_version.py)
    assert pb.specifier == f">={gen},<{gen.major + 1}", pb.specifier
    assert Version(version("protobuf")) in pb.specifier


def test_locks_pin_every_requirement_within_its_bounds_with_hashes() -> None:
    req = project()
    runtime, dev = lock("requirements.lock"), lock("requirements-dev.lock")
    for lock_pins, reqs in ((runtime, req["runtime"]), (dev, req["runtime"] + req["dev"])):
        for r in reqs:
            name = canonicalize_name(r.name)
            assert name in lock_pins, f"{r} is not in the lock: run bash deploy/lock.sh"
            pinned, marker, _ = lock_pins[name]
            assert pinned in r.specifier, f"{name}=={pinned} is outside {r}: run bash deploy/lock.sh"
            if r.marker is not None:   # a platform-only dependency keeps its marker
                assert marker and Marker(marker) == r.marker, (name, marker, str(r.marker))
    for lock_pins in (runtime, dev):
        assert all(n >= 1 for _, _, n in lock_pins.values()), "every pin carries its hashes"
    for pkg, (pin, _, _) in runtime.items():
        assert dev[pkg][0] == pin, f"requirements-dev.lock moved {pkg} off the runtime pin"


def test_this_environment_runs_the_locked_versions() -> None:
    stale = []
    for name, (pinned, marker, _) in lock("requirements-dev.lock").items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            stale.append(f"{name} missing (locked {pinned})")
            continue
        if installed != pinned:
            stale.append(f"{name} {installed} (locked {pinned})")
    assert not stale, f"run bash deploy/setup.sh: {stale}"


def test_every_runtime_dependency_has_its_reason_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| package | why |"):]
    listed = {canonicalize_name(n) for row in table.splitlines() if row.startswith("| ")
              for n in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", row.split("|")[1])}
    missing = [r.name for r in project()["runtime"] if canonicalize_name(r.name) not in listed]
    assert not missing, f"add a row to the README's dependency table for {missing}"


def _imported_by(module: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing ``module``."""
    out = subprocess.run([sys.executable, "-c", f"import sys, {module}; print(' '.join(sys.modules))"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in out.split()}


def test_agent_processes_do_not_load_the_azure_sdk() -> None:
    """Only the cloud service opens blob accounts. ``cloudsvc.vaultstore`` (which a recovery
    host uses on local disks) imported the Azure SDK for every agent process: ~0.25 s of
    start-up and ~11 MiB each. And a primary's cycle reaches recovery hosts through
    ``agent.replica.channel`` without loading the recovery host's own parts."""
    for module in ("agent.daemon", "agent.replica.channel", "cloudsvc.vaultstore"):
        assert "azure" not in _imported_by(module), module
    assert "azure" in _imported_by("cloudsvc.replication")   # the cloud service's blob accounts
    assert "cloudsvc" not in _imported_by("agent.replica.channel")
