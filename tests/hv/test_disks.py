"""Disk images: probe facts, reads and writes, judged by qemu-img."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from dissect.hypervisor.disk.vhd import VHD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asrerrors import DiskImageError, NotFound
from diskimage import create_fixed_vhd, open_disk, probe

from . import qemu, vhdx_diff

MiB = 1 << 20
SIZE = 21 * MiB  # not a multiple of any block size used here
FILL = [(0, 4096, 0x11), (2 * MiB - 512, 4096, 0x22), (8 * MiB - 100 * 512, 300 * 512, 0x33),
        (SIZE - 65536, 65536, 0x44), (5 * MiB + 3 * 512, 512, 0x55)]
EXPECTED = {
    "raw": ("raw", ""),
    "vhd-fixed": ("vhd", "fixed"),
    "vhd-dynamic": ("vhd", "dynamic"),
    "vhdx-fixed": ("vhdx", "fixed"),
    "vhdx-fixed-allocated": ("vhdx", "fixed"),
    "vhdx-dynamic": ("vhdx", "dynamic"),
    "vhdx-dynamic-1m": ("vhdx", "dynamic"),
}
# qemu-img check supports only these; dynamic VHD is judged by compare and by dissect
CHECKABLE = {"vhdx-fixed", "vhdx-fixed-allocated", "vhdx-dynamic", "vhdx-dynamic-1m"}


def make(tmp: Path, kind: str, fill: bool = True) -> Path:
    path = tmp / f"{kind}.img"
    qemu.create(path, kind, SIZE)
    if fill:
        qemu.qemu_write(path, kind, FILL)
    return path


@pytest.mark.parametrize("kind", sorted(qemu.KINDS))
def test_probe_and_read_match_qemu(tmp_path: Path, kind: str) -> None:
    path = make(tmp_path, kind)
    facts = probe(str(path))
    assert (facts.format, facts.subformat) == EXPECTED[kind]
    assert facts.virtual_size == SIZE
    assert facts.parent is None
    reference = qemu.to_raw(path, kind, tmp_path / "ref.raw")
    with open_disk(str(path), readonly=True) as disk:
        assert disk.virtual_size == SIZE
        assert disk.read(0, SIZE) == reference
        rng = random.Random(7)
        for _ in range(200):
            off = rng.randrange(SIZE)
            length = rng.randrange(min(3 * MiB, SIZE - off) + 1)
            assert disk.read(off, length) == reference[off:off + length]
        with pytest.raises(DiskImageError):
            disk.read(SIZE - 10, 11)


write_ops = st.lists(
    st.tuples(st.integers(0, SIZE - 1), st.integers(1, 3 * MiB), st.integers(1, 255)),
    min_size=1,
    max_size=6,
)


@pytest.mark.parametrize("kind", sorted(qemu.KINDS))
@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=write_ops)
def test_random_writes_keep_image_valid(
    tmp_path: Path, kind: str, ops: list[tuple[int, int, int]]
) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    path = make(work, kind)
    ref = work / "ref.raw"
    qemu.to_raw(path, kind, ref)
    with open_disk(str(path)) as disk, open(ref, "r+b") as rf:
        for off, length, pat in ops:
            length = min(length, SIZE - off)
            data = bytes([pat]) * length
            disk.write(off, data)
            rf.seek(off)
            rf.write(data)
            assert disk.read(off, length) == data
        disk.flush()
    fmt = qemu.KINDS[kind][0]
    if kind in CHECKABLE:
        r = qemu.check(path, fmt)
        assert r.returncode == 0, r.stdout + r.stderr
    r = qemu.compare(path, fmt, ref)
    assert r.returncode == 0, r.stdout + r.stderr
    assert probe(str(path)).virtual_size == SIZE
    if kind == "vhd-dynamic":
        with open(path, "rb") as fh:
            assert VHD(fh).read(SIZE) == ref.read_bytes()
    shutil.rmtree(work)


def test_create_fixed_vhd_is_sparse_and_valid(tmp_path: Path) -> None:
    path = tmp_path / "out.vhd"
    create_fixed_vhd(str(path), SIZE)
    facts = probe(str(path))
    assert (facts.format, facts.subformat, facts.virtual_size) == ("vhd", "fixed", SIZE)
    ref = tmp_path / "ref.raw"
    with open(ref, "wb") as fh:
        fh.truncate(SIZE)
    with open_disk(str(path)) as disk, open(ref, "r+b") as rf:
        for off, length, pat in FILL:
            disk.write(off, bytes([pat]) * length)
            rf.seek(off)
            rf.write(bytes([pat]) * length)
        disk.flush()
    assert os.stat(path).st_blocks * 512 < 2 * MiB  # zero blocks stay holes
    r = qemu.compare(path, "vpc", ref)
    assert r.returncode == 0, r.stdout + r.stderr
    with pytest.raises(DiskImageError):
        create_fixed_vhd(str(path), SIZE)


def test_differencing_vhdx(tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhdx"
    qemu.create(parent, "vhdx-dynamic-1m", SIZE)
    qemu.qemu_write(parent, "vhdx-dynamic-1m", FILL)
    parent_raw = qemu.to_raw(parent, "vhdx", tmp_path / "p.raw")
    child = tmp_path / "child.vhdx"
    writes = [(1 * MiB, MiB, 0x77), (7 * MiB, 2 * MiB, 0x78)]
    child_raw = vhdx_diff.make_child(parent, child, SIZE, writes)
    facts = probe(str(child))
    assert (facts.format, facts.subformat, facts.virtual_size) == ("vhdx", "differencing", SIZE)
    assert facts.parent == str(parent)
    expected = vhdx_diff.expected_content(parent_raw, child, child_raw)
    with open_disk(str(child)) as disk:
        assert disk.read(0, SIZE) == expected
        assert disk.read(MiB - 10, 20) == expected[MiB - 10:MiB + 10]
        with pytest.raises(DiskImageError, match="differencing"):
            disk.write(0, b"x")


def test_malformed_images(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        probe(str(tmp_path / "missing.vhdx"))
    # truncated VHDX
    vhdx = make(tmp_path, "vhdx-dynamic", fill=False)
    with open(vhdx, "r+b") as fh:
        fh.truncate(100 * 1024)
    with pytest.raises(DiskImageError, match=str(vhdx)):
        probe(str(vhdx))
    # damaged VHD footer (checksum)
    vhd = make(tmp_path, "vhd-fixed", fill=False)
    with open(vhd, "r+b") as fh:
        fh.seek(-512 + 40, os.SEEK_END)
        fh.write(b"\x01")
    with pytest.raises(DiskImageError, match="checksum"):
        probe(str(vhd))
    # dynamic VHD that lost its end (footer copy at the start only)
    dyn = make(tmp_path, "vhd-dynamic")
    with open(dyn, "r+b") as fh:
        fh.truncate(os.path.getsize(dyn) - 4096)
    with pytest.raises(DiskImageError):
        open_disk(str(dyn))
    # a VHDX signature on garbage
    junk = tmp_path / "junk.vhdx"
    junk.write_bytes(b"vhdxfile" + os.urandom(300_000))
    with pytest.raises(DiskImageError):
        open_disk(str(junk))
    # small garbage is raw
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    assert probe(str(small)).format == "raw"
