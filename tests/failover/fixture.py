"""Helpers for the failover tests: the replication fixture's protected VM plus asr calls."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.replication.fixture import Protected

VAULT = ("--vault", "contoso")


def compare(a: Path | str, fmt_a: str, b: Path | str, fmt_b: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
                          capture_output=True, text=True, check=False)


def asr_job(p: Protected, *args: str) -> dict[str, Any]:
    """Run a job-starting asr command with --wait; the finished job's document."""
    return dict(p.cloud.asr_json(*args, *VAULT, "--wait", "--timeout", "240"))


def recovered(p: Protected) -> list[dict[str, Any]]:
    return list(p.cloud.asr_json("recovered-vm", "list", *VAULT))


def vm_state(p: Protected) -> dict[str, Any]:
    return dict(p.cloud.asr_json("vm", "show", p.vm, *VAULT))


def assert_disks_equal(rvm: dict[str, Any], refs: list[Path]) -> None:
    disks = sorted(rvm["disks"], key=lambda d: d["index"])
    assert len(disks) == len(refs)
    for d, ref in zip(disks, refs, strict=True):
        assert Path(d["path"]).is_absolute()
        r = compare(d["path"], "vpc", ref, "raw")
        assert r.returncode == 0, (d, r.stdout, r.stderr)
