"""`asr point export VM POINT --disk N --out FILE`: the target is checked before the export
starts (a coded UsageError naming the path, never a traceback), and the image is written with
durablefile.atomic_writer: FILE is the whole image or, after any failure, what it was before;
a full disk is DiskFull (ASR-0061) and leaves no partial file.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asrcli import point_cmds
from asrerrors import DiskFull
from asrpb import replication_pb2
from chunkfmt import BLOCK_SIZE, encode_chunk
from tests.harness import BIN
from tests.replication.fixture import qemu
from tests.security.conftest import World


def export(world: World, out: Path, vm: str = "vm1", disk: int = 0) -> subprocess.CompletedProcess[str]:
    return world.cloud.asr("point", "export", vm, world.point_id if vm == "vm1" else "latest", "--disk", str(disk),
                           "--out", str(out), "--vault", "contoso", check=False)


def no_traceback(res: subprocess.CompletedProcess[str], exit_code: int, *words: str) -> None:
    assert res.returncode == exit_code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)


def test_the_target_is_checked_before_the_export(world: World, tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "img.raw"
    # a VM that does not exist: a check made after the export started would say NotFound (40)
    no_traceback(export(world, missing, vm="no-such-vm"), 2, "ASR-0002", str(tmp_path / "missing"), "does not exist")
    no_traceback(export(world, missing), 2, "ASR-0002", str(tmp_path / "missing"))
    no_traceback(export(world, tmp_path), 2, "ASR-0002", str(tmp_path), "is a directory")
    assert list(tmp_path.iterdir()) == []


def test_the_image_is_whole_or_the_old_file_stays(world: World, tmp_path: Path) -> None:
    out = tmp_path / "img.raw"
    out.write_bytes(b"the previous export")
    # the cloud refuses (no disk 7) after the target was opened: the old file is untouched
    no_traceback(export(world, out, disk=7), 2, "no disk 7")
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.raw"]
    res = export(world, out)
    assert res.returncode == 0, res.stderr
    disk = world.root / "hv01" / "disks" / "vm1-os.vhdx"
    judge = tmp_path / "judge.raw"
    qemu("qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(disk), str(judge))
    assert out.read_bytes() == judge.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.raw", "judge.raw"]


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    res = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                         capture_output=True, timeout=30)
    return res.returncode == 0


def test_a_full_disk_is_disk_full_with_no_partial_file(world: World, tmp_path: Path) -> None:
    """A 128 KiB tmpfs (in a mount namespace of its own, gone with the command) cannot hold
    the image's 320 KiB of data."""
    if not _can_mount_tmpfs():
        pytest.skip("needs unshare -m and tmpfs mounts (root or user namespaces) for a small file system")
    small = tmp_path / "small"
    small.mkdir()
    script = (f'mount -t tmpfs -o size=128k tmpfs "{small}" || exit 99; echo old > "{small}/img.raw"; '
              f'"{BIN / "asr"}" point export vm1 {world.point_id} --disk 0 --out "{small}/img.raw" --vault contoso; '
              f'rc=$?; echo "LISTING"; ls -A "{small}"; cat "{small}/img.raw"; exit $rc')
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], env=world.cloud.env(), capture_output=True,
                         text=True, timeout=300)
    no_traceback(res, 61, "ASR-0061", f"{small}/img.raw")
    listing = res.stdout.split("LISTING\n", 1)[1].split()
    assert listing == ["img.raw", "old"], res.stdout  # the old file, whole; no temporary left


# ---- the same in-process, with an injected ENOSPC (no privileges needed) ----------------------
class _Points:
    def __init__(self, blocks: dict[int, bytes], size: int) -> None:
        self.blocks, self.size = blocks, size

    def ExportPoint(self, req: Any, timeout: float) -> Iterator[replication_pb2.ExportPart]:  # noqa: N802
        yield replication_pb2.ExportPart(virtual_size=self.size, point_id="rp-1")
        for b, data in sorted(self.blocks.items()):
            yield replication_pb2.ExportPart(blocks=[b], frames=[encode_chunk(data, None)])


def _args(out: Path) -> argparse.Namespace:
    return argparse.Namespace(vault="v", vm="vm1", point="latest", disk=0, out=str(out), encryption_key_file=None,
                              json=True)


def test_export_writes_the_blocks_and_maps_enospc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = {0: b"\xab" * BLOCK_SIZE, 3: b"\x5c" * BLOCK_SIZE}
    monkeypatch.setattr(point_cmds, "_stub", lambda c: _Points(blocks, 8 * BLOCK_SIZE))
    client: Any = argparse.Namespace(endpoint="test")
    out = tmp_path / "img.raw"
    doc, _ = point_cmds.point_export(client, _args(out))
    data = out.read_bytes()
    assert len(data) == 8 * BLOCK_SIZE and doc["bytes_written"] == 2 * BLOCK_SIZE
    assert data[:BLOCK_SIZE] == blocks[0] and data[3 * BLOCK_SIZE:4 * BLOCK_SIZE] == blocks[3]
    assert data[BLOCK_SIZE:3 * BLOCK_SIZE] == bytes(2 * BLOCK_SIZE)

    writes = {"n": 0}
    real = os.pwrite

    def full_after_one(fd: int, buf: bytes, offset: int) -> int:
        writes["n"] += 1
        if writes["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, buf, offset)

    monkeypatch.setattr(point_cmds.os, "pwrite", full_after_one)
    with pytest.raises(DiskFull) as info:
        point_cmds.point_export(client, _args(out))
    monkeypatch.undo()
    assert str(out) in str(info.value) and info.value.exit_code == 61
    assert out.read_bytes() == data  # the earlier export, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.raw"]
