"""Materialisation against a vault store filled directly (no daemons): content, sparseness,
encryption and the key check, judged by qemu-img."""

from __future__ import annotations

import errno
import glob
import os
import random
import subprocess
from pathlib import Path

import pytest

import chunkfmt as cf
from asrclock import FakeClock
from asrerrors import EncryptionKeyError, JobFailed
from cloudsvc.failover.materialise import check_key, materialise_disk
from cloudsvc.vaultstore import DiskDelta, LocalDirBackend, PointInfo, VaultStore
from tests.vaultstore.diskdata import Disk, random_disk

VAULT_KEY = cf.vault_id_key("vault-test")


def commit(store: VaultStore, vm: str, disks: list[Disk], key: cf.CustomerKey | None) -> PointInfo:
    id_key = key.id_key if key else VAULT_KEY
    aead = key.aead_key if key else None
    session = store.begin_session(vm)
    deltas = []
    for d in disks:
        ids = {}
        frames = {}
        for i, b in d.blocks.items():
            c = cf.ZERO_ID if cf.is_zero_block(b) else cf.chunk_id(id_key, b)
            ids[i] = c
            if c != cf.ZERO_ID:
                frames[c] = cf.encode_chunk(b, aead)
        store.put_chunks(session, list(frames.items()))
        deltas.append(DiskDelta(d.size, ids))
    point = store.commit_point(session, vm, deltas, None, "crash", 1_780_000_000.0)
    store.end_session(session)
    return point


@pytest.fixture
def store(tmp_path: Path) -> VaultStore:
    return VaultStore(LocalDirBackend(tmp_path / "account"), str(tmp_path / "index.db"), FakeClock(),
                      pack_size=1_000_000)


def qemu_equal(vhd: str, raw: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", vhd, str(raw)],
                          capture_output=True, text=True)


def test_two_disks_equal_by_qemu_and_sparse(store: VaultStore, tmp_path: Path) -> None:
    rng = random.Random(5)
    disks = [random_disk(rng, 40, fill=0.3), random_disk(rng, 17, fill=0.8, tail=1024)]
    point = commit(store, "vm1", disks, None)
    keys = check_key(store, point, VAULT_KEY, None)
    for i, d in enumerate(disks):
        raw = tmp_path / f"src{i}.raw"
        raw.write_bytes(d.image())
        out = str(tmp_path / f"disk{i}.vhd")
        res = materialise_disk(store, point, i, out, keys)
        assert res.blocks_written == len([b for b in d.blocks.values() if not cf.is_zero_block(b)])
        cmp = qemu_equal(out, raw)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        info = subprocess.run(["qemu-img", "info", "-f", "vpc", out], capture_output=True, text=True)
        assert info.returncode == 0
        assert not glob.glob(out + ".*partial")
    # disk 0 is 30% full: the file's allocated blocks stay well under its apparent size
    st = os.stat(tmp_path / "disk0.vhd")
    assert st.st_blocks * 512 < st.st_size * 0.6


def test_encrypted_needs_the_right_key(store: VaultStore, tmp_path: Path) -> None:
    key = cf.CustomerKey.generate()
    disk = random_disk(random.Random(9), 20, fill=0.7)
    point = commit(store, "vm2", [disk], key)
    with pytest.raises(EncryptionKeyError, match="no key was given"):
        check_key(store, point, VAULT_KEY, None)
    with pytest.raises(EncryptionKeyError, match="not the key"):
        check_key(store, point, VAULT_KEY, cf.CustomerKey.generate())
    keys = check_key(store, point, VAULT_KEY, key)
    raw = tmp_path / "src.raw"
    raw.write_bytes(disk.image())
    out = str(tmp_path / "enc.vhd")
    materialise_disk(store, point, 0, out, keys)
    assert qemu_equal(out, raw).returncode == 0


def test_failure_leaves_no_file(store: VaultStore, tmp_path: Path) -> None:
    key = cf.CustomerKey.generate()
    disk = random_disk(random.Random(3), 10, fill=1.0)
    point = commit(store, "vm3", [disk], key)
    out = str(tmp_path / "bad.vhd")
    wrong = check_key(store, point, VAULT_KEY, key)
    from chunkfmt.keys import Keys

    with pytest.raises(EncryptionKeyError):
        materialise_disk(store, point, 0, out, Keys(id_key=wrong.id_key, aead_key=cf.CustomerKey.generate().aead_key))
    assert not os.path.exists(out) and not glob.glob(out + ".*partial")


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("tail", [0, 700, 64 * 1024 - 1])
def test_direct_and_buffered_writes_give_the_same_disk(
    store: VaultStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool, tail: int
) -> None:
    """Both write paths (O_DIRECT from aligned buffers, and buffered where the filesystem
    refuses direct I/O) produce the point's content, including a last block that is not a
    whole sector (direct writes pad it to a sector inside the VHD's data area)."""
    from cloudsvc.failover import materialise as mat

    if not direct:
        real_open = os.open

        def open_like_tmpfs(p: str, flags: int, *a: int) -> int:
            if flags & os.O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument", p)  # what tmpfs answers
            return real_open(p, flags, *a)

        monkeypatch.setattr(mat.os, "open", open_like_tmpfs)
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    opened = mat._Output.open(str(probe))
    opened.close()
    if direct and not opened.direct:
        pytest.skip(f"{tmp_path} is on a filesystem without O_DIRECT")
    assert opened.direct == direct
    disk = random_disk(random.Random(tail), 130, fill=0.9, tail=tail)  # > 2 windows
    point = commit(store, "vm-odd", [disk], None)
    raw = tmp_path / "src.raw"
    raw.write_bytes(disk.image())
    out = str(tmp_path / "disk.vhd")
    materialise_disk(store, point, 0, out, check_key(store, point, VAULT_KEY, None))
    cmp = qemu_equal(out, raw)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    footer = Path(out).read_bytes()[-512:]
    assert footer.startswith(b"conectix"), "the VHD footer survives the padded last write"


def test_a_device_with_4k_sectors_gets_its_short_tail_written_buffered(
    store: VaultStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Direct I/O on a 4 KiB-sector device refuses a write that is a multiple of 512 bytes but
    not of 4096 (EINVAL). The short last block then goes through a buffered descriptor, and
    the disk still equals the point."""
    import fcntl

    from cloudsvc.failover import materialise as mat

    real_pwrite = os.pwrite
    refused = []

    def pwrite_4kn(fd: int, data: memoryview, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT and (len(data) % 4096 or offset % 4096):
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(mat.os, "pwrite", pwrite_4kn)
    disk = random_disk(random.Random(4), 70, fill=1.0, tail=64 * 1024 - 1536)  # tail block 1 KiB
    point = commit(store, "vm-4kn", [disk], None)
    raw = tmp_path / "src.raw"
    raw.write_bytes(disk.image())
    out = str(tmp_path / "disk.vhd")
    materialise_disk(store, point, 0, out, check_key(store, point, VAULT_KEY, None))
    monkeypatch.undo()
    probe = mat._Output.open(out)
    probe.close()
    if not probe.direct:
        pytest.skip(f"{tmp_path} is on a filesystem without O_DIRECT")
    assert refused, "the short tail was offered to direct I/O first"
    cmp = qemu_equal(out, raw)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


def test_a_caller_that_must_stop_at_the_last_report_leaves_nothing(store: VaultStore, tmp_path: Path) -> None:
    """The last progress report comes before the rename: a runner whose job was taken over by
    another cloud service process (issue 15) raises there, and nothing is left under the
    final name nor as a partial file; a partial file of an earlier attempt is removed."""
    disk = random_disk(random.Random(4), 12, fill=0.5)
    point = commit(store, "vm4", [disk], None)
    keys = check_key(store, point, VAULT_KEY, None)
    out = str(tmp_path / "late.vhd")
    Path(out + ".0badf00d.partial").write_bytes(b"an attempt that died")
    seen: list[tuple[int, int]] = []

    def report(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) > 1 and done == total:
            raise JobFailed("taken over")

    with pytest.raises(JobFailed):
        materialise_disk(store, point, 0, out, keys, progress=report)
    assert not os.path.exists(out) and not glob.glob(out + ".*partial")
    assert seen[-1][0] == seen[-1][1]
