"""Issue 14: a site-to-site protection with the policy's ``strong`` compression ships group
frames host to host; the recovery host stores them and applies every member to the replica
disks, which equal the source's (qemu-img compare) after the first and an incremental cycle."""

from __future__ import annotations

import os
from pathlib import Path

from tests.harness import Cloud, wait_for
from tests.replication.fixture import group_frames
from tests.sitetosite.fixture import TwoSites

BLOCK = 64 * 1024


def test_strong_compression_reaches_the_replica_disks(cloud: Cloud, tmp_path: Path) -> None:
    s = TwoSites(cloud, tmp_path)
    s.protect(compression="strong")
    text = b"".join(f"{i:08d} replica text that compresses well across blocks\n".encode() for i in range(60000))
    for i in range(24):  # text and random blocks side by side: groups of mixed members
        s.hv01.write("web01", 0, i * BLOCK, text[i * BLOCK:(i + 1) * BLOCK] if i % 4 else os.urandom(BLOCK))
    first = s.once()
    assert first["chunks_sent"] >= 24, first
    wait_for(lambda: s.applied() == first["point_id"], 60, what="replica disks at the first point")
    disks = [str(s.replica_dir / s.vm_id / "disks" / f"disk{i}.vhdx") for i in range(2)]
    s.equal(disks, "vhdx", s.raw("p1"))
    for i in (2, 3, 9, 10, 11):  # neighbours change together: a group in an incremental cycle
        s.hv01.write("web01", 0, i * BLOCK, text[(i + 30) * BLOCK:(i + 31) * BLOCK])
    second = s.once()
    assert second["modes"][0] == "incremental", second
    wait_for(lambda: s.applied() == second["point_id"], 60, what="replica disks at the second point")
    s.equal(disks, "vhdx", s.raw("p2"))
    assert group_frames(s.replica_dir / s.vm_id, skip="disks") >= 1, "no group frame reached the recovery host"
