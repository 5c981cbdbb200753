"""qemu-img / qemu-io, the independent judge of disk image content in these tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

# name -> (qemu format, create options)
KINDS: dict[str, tuple[str, str]] = {
    "raw": ("raw", ""),
    "vhd-fixed": ("vpc", "subformat=fixed,force_size=on"),
    "vhd-dynamic": ("vpc", "subformat=dynamic,force_size=on"),
    "vhdx-fixed": ("vhdx", "subformat=fixed"),
    "vhdx-fixed-allocated": ("vhdx", "subformat=fixed,block_state_zero=off"),
    "vhdx-dynamic": ("vhdx", "subformat=dynamic"),
    "vhdx-dynamic-1m": ("vhdx", "subformat=dynamic,block_size=1M"),
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def create(path: Path, kind: str, size: int) -> None:
    fmt, opts = KINDS[kind]
    args = ["qemu-img", "create", "-q", "-f", fmt]
    if opts:
        args += ["-o", opts]
    r = run(*args, str(path), str(size))
    assert r.returncode == 0, r.stderr


def qemu_write(path: Path, kind: str, writes: list[tuple[int, int, int]]) -> None:
    """Apply (offset, length, pattern byte) writes with one qemu-io process."""
    fmt = KINDS[kind][0]
    cmds: list[str] = []
    for off, length, pat in writes:
        cmds += ["-c", f"write -P {pat} {off} {length}"]
    r = run("qemu-io", "-f", fmt, *cmds, str(path))
    assert r.returncode == 0 and "error" not in r.stdout.lower(), r.stdout + r.stderr


def to_raw(path: Path, kind_or_fmt: str, out: Path) -> bytes:
    fmt = KINDS[kind_or_fmt][0] if kind_or_fmt in KINDS else kind_or_fmt
    r = run("qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(out))
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


def check(path: Path, fmt: str) -> subprocess.CompletedProcess[str]:
    return run("qemu-img", "check", "-f", fmt, str(path))


def compare(path: Path, fmt: str, reference: Path) -> subprocess.CompletedProcess[str]:
    return run("qemu-img", "compare", "-f", fmt, "-F", "raw", str(path), str(reference))
