"""Replication into a storage account on the Azure Blob API (Azurite): points are committed
into blobs, verify clean, and the export equals the disks (qemu-img compare)."""

from __future__ import annotations

from pathlib import Path

from tests.failover.fixture import compare
from tests.harness import Cloud
from tests.replication.fixture import protect


def test_replicate_into_azurite(cloud: Cloud, tmp_path: Path, azurite: str) -> None:
    p = protect(cloud, tmp_path, blob_connection=azurite)
    accounts = cloud.asr_json("storage", "list", "--vault", "contoso")
    assert accounts[0]["backend"] == "blob"
    p.once()
    p.write(0, 3 * 65536, 4096, 0x5A)
    p.once()
    points = p.points()
    assert len(points) == 2
    latest = points[-1]["point_id"]
    assert p.verify(latest)["damage"] == []
    for i, (img, fmt) in enumerate(p.disks):
        out = p.export(latest, i, tmp_path / f"blob-export-{i}.raw")
        res = compare(out, "raw", img, fmt)
        assert res.returncode == 0, res.stdout + res.stderr
    # nothing of the point's data lives in the local storage directory
    local = cloud.data_dir / "storage"
    assert not any(f.is_file() and f.stat().st_size > 65536 for f in local.rglob("*"))
