"""Issue 14: a policy's ``strong`` (and the default ``balanced``) compression ships and stores
an unencrypted VM's new blocks as group frames (several blocks compressed together,
chunkfmt.encode_group) and an encrypted VM's one by one, and every point still exports equal
to the disks (qemu-img compare); ``asr point verify`` reads them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.hypervisor import LocalHypervisor
from tests.harness import Cloud
from tests.replication.fixture import group_frames, protect

BLOCK = 65536


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("compression", ["strong", ""], ids=["strong", "default"])
def test_group_compression_round_trips(cloud: Cloud, tmp_path: Path, encrypt: bool, compression: str) -> None:
    """Also the default (``balanced``). Both group an unencrypted VM's blocks and frame an
    encrypted VM's one by one (the cloud could not regroup them; an encrypted group frame
    written by an older agent is read by the same ``decode_chunk``: tests/vaultstore)."""
    p = protect(cloud, tmp_path, encrypt=encrypt, fill=False, compression=compression)
    text = b"".join(f"line {i}: the quick brown fox jumps over the lazy dog\n".encode() for i in range(90000))
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    # text, random and repeated blocks side by side: groups mix compressible and not
    for i in range(40):
        data = text[i * BLOCK:(i + 1) * BLOCK] if i % 5 else os.urandom(BLOCK)
        hv.write("vm1", 0, i * BLOCK, data)
    hv.write("vm1", 1, 0, text[:BLOCK])  # the same block on the other disk: stored once
    hv.close()
    first = p.once()
    assert first["chunks_sent"] >= 40
    storage = tmp_path / "cloud" / "storage"
    if not encrypt:
        assert group_frames(storage) >= 1, "no group frame was sent"  # the 40 blocks: one group
    else:
        assert group_frames(storage) == 0, f"an encrypted VM's blocks were grouped under {compression or 'balanced'}"
    refs = p.snapshot_raw(tmp_path, "first")
    # an incremental cycle: a few scattered blocks change, one group's member is overwritten
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    for i in (3, 4, 17, 33):
        hv.write("vm1", 0, i * BLOCK, text[(i + 100) * BLOCK % len(text):][:BLOCK].ljust(BLOCK, b"."))
    hv.close()
    second = p.once()
    refs2 = p.snapshot_raw(tmp_path, "second")
    key = ["--key-file", str(tmp_path / "hv01" / "customer.key")] if encrypt else []
    for point, expect in ((first["point_id"], refs), (second["point_id"], refs2)):
        for disk in range(2):
            out = p.export(point, disk, tmp_path / f"{point}-{disk}.raw", *key)
            res = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(out), str(expect[disk])],
                                 capture_output=True, text=True)
            assert res.returncode == 0, (point, disk, res.stdout, res.stderr)
    assert p.verify(second["point_id"])["ok"] is True
