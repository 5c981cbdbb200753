"""Issue 4, must-show 1 and 4: every point exports exactly the disks as they were (judged by
qemu-img compare), across initial, incremental and resync cycles; a flipped byte in a stored
pack is reported by verify naming the point and the disk."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from agent.hypervisor import LocalHypervisor
from tests.harness import Cloud
from tests.replication.fixture import MiB, protect


def compare(a: Path, fmt_a: str, b: Path, fmt_b: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
                          capture_output=True, text=True, check=False)


def test_points_export_the_disks_as_they_were(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    refs: dict[str, list[Path]] = {}
    modes: list[list[str]] = []
    counts: list[tuple[int, int]] = []                    # (blocks read, blocks changed) per point
    every_block = (8 * MiB + 4 * MiB) // 65536            # both disks, 64 KiB blocks

    def point(tag: str) -> str:
        res = p.once()
        modes.append(res["modes"])
        counts.append((res["blocks_read"], res["blocks_changed"]))
        refs[res["point_id"]] = p.snapshot_raw(tmp_path, tag)
        return str(res["point_id"])

    first = point("p0")                                   # initial replication
    p.write(0, 6 * 65536 - 100, 5000, 0x42)               # a write straddling two blocks
    p.write(1, 0, 4096, 0x7e)
    point("p1")                                           # incremental
    p.write(0, 0, 65536, 0)                               # a block becomes zero again
    p.write(1, 4 * MiB - 4096, 4096, 0x99)                # the last block of the data disk
    point("p2")
    LocalHypervisor(str(p.site.root / "hv01" / "vms")).reset_tracking("vm1")   # tracking lost
    p.write(0, 2 * MiB, 65536 * 3, 0x33)
    res = p.once()                                        # resync by hash comparison
    modes.append(res["modes"])
    counts.append((res["blocks_read"], res["blocks_changed"]))
    refs[res["point_id"]] = p.snapshot_raw(tmp_path, "p3")
    assert modes == [["initial"] * 2, ["incremental"] * 2, ["incremental"] * 2, ["resync"] * 2]
    # a first copy and a resync read every block; an incremental cycle only the dirty ones.
    # The first copy's point takes the non-zero blocks the fixture wrote (16 + 3 + 1 on disk 0,
    # 4 + 1 on disk 1); the resync's only the 3 that differ, found by the fingerprints of p2.
    assert counts == [(every_block, 25), (3, 3), (2, 2), (every_block, 3)], counts
    assert res["resync_by"] == ["fingerprints"] * 2, res
    # without usable fingerprints (files gone; one left half-patched) the vault's block map decides
    fp_dir = p.site.root / "hv01" / "fingerprints" / p.vm_id
    (fp_dir / "disk0.fp").unlink()
    with open(fp_dir / "disk1.fp", "r+b") as f:
        f.seek(16)
        f.write(bytes(64))                                # the header of a patch cut short
    LocalHypervisor(str(p.site.root / "hv01" / "vms")).reset_tracking("vm1")
    p.write(0, 3 * MiB, 65536, 0x21)
    p.write(1, 65536, 100, 0x22)
    res = p.once()
    modes.append(res["modes"])
    refs[res["point_id"]] = p.snapshot_raw(tmp_path, "p4")
    assert res["resync_by"] == ["block-map"] * 2 and res["blocks_changed"] == 2, res
    res = p.once()                                        # the resync rewrote both files
    refs[res["point_id"]] = p.snapshot_raw(tmp_path, "p5")
    assert res["modes"] == ["incremental"] * 2 and res["blocks_changed"] == 0, res
    LocalHypervisor(str(p.site.root / "hv01" / "vms")).reset_tracking("vm1")
    p.write(1, 2 * MiB, 65536, 0x23)
    res = p.once()
    refs[res["point_id"]] = p.snapshot_raw(tmp_path, "p6")
    assert res["resync_by"] == ["fingerprints"] * 2 and res["blocks_changed"] == 1, res

    listed = p.points()
    assert [x["point_id"] for x in listed] == list(refs)
    assert all(x["kind"] == "crash" for x in listed)
    for pid, disks in refs.items():
        for i, ref in enumerate(disks):
            out = p.export(pid, i, tmp_path / f"export-{pid}-{i}.raw")
            r = compare(out, "raw", ref, "raw")
            assert r.returncode == 0, (pid, i, r.stdout, r.stderr)
    # and the latest point against the live images themselves
    for i, (img, fmt) in enumerate(p.disks):
        out = p.export("latest", i, tmp_path / f"latest-{i}.raw")
        assert compare(out, "raw", img, fmt).returncode == 0
    # older points stay exact after later ones share their unchanged subtrees
    assert compare(p.export(first, 0, tmp_path / "again.raw"), "raw", refs[first][0], "raw").returncode == 0
    shown = cloud.asr_json("vm", "show", "vm1", "--vault", "contoso")
    assert shown["initial_replication_progress"] == 1.0 and shown["replication_health"] == "Normal"
    assert shown["last_replication"] == listed[-1]["created_at"]


def test_flipped_byte_is_reported_with_point_and_disk(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path, fill=False)
    # one incompressible block on both disks: the point's only chunk, so the pack holds one
    # blob and a byte flipped inside it damages a block of each disk
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    block = os.urandom(65536)
    hv.write(p.vm, 0, 2 * 65536, block)
    hv.write(p.vm, 1, 65536, block)
    hv.close()
    pid = p.once()["point_id"]
    assert p.verify(pid)["ok"] is True
    store = tmp_path / "cloud" / "storage"
    packs = sorted(x for x in store.rglob("*") if x.is_file() and "packs" in x.parts)
    assert packs, list(store.rglob("*"))
    victim = max(packs, key=lambda x: x.stat().st_size)
    backup = tmp_path / "pack.bak"
    shutil.copy(victim, backup)
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x01
    victim.write_bytes(bytes(data))
    rep = p.verify(pid)
    assert rep["ok"] is False and rep["damage"], rep
    assert all(d["what"] for d in rep["damage"])
    assert rep["point_id"] == pid
    damaged = sorted((d.get("disk_index", 0), int(d.get("block_index", 0))) for d in rep["damage"])
    assert damaged == [(0, 2), (1, 1)], rep
    res = cloud.asr("point", "verify", "vm1", pid, "--vault", "contoso", check=False)
    assert res.returncode == 62 and pid in res.stdout and "disk" in res.stdout
    shutil.copy(backup, victim)
    assert p.verify(pid)["ok"] is True
