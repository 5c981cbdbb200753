"""Issue 10, found 7: `point verify` reads pack headers and trailers, and an operator command
rebuilds a storage account's index from the trailers. Through the real CLI and cloud service:
a byte flipped in a pack's trailer makes verify report damage naming the pack (exit 62); the
index rebuilt after its chunk rows were lost serves exact exports again; a pack whose trailer
is damaged is left out of the rebuild by name (exit 62)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from tests.failover.fixture import VAULT, compare
from tests.harness import Cloud
from tests.replication.fixture import protect


def test_verify_checks_trailers_and_the_index_rebuilds_from_them(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    point = p.once()["point_id"]
    refs = p.snapshot_raw(tmp_path, "p")
    assert p.verify(point)["ok"] is True and int(p.verify(point)["packs_checked"]) >= 1

    store = cloud.data_dir / "storage"
    packs = sorted(x for x in store.rglob("*") if x.is_file() and "packs" in x.parts)
    victim = max(packs, key=lambda x: x.stat().st_size)
    backup = tmp_path / "pack.bak"
    shutil.copy(victim, backup)
    data = bytearray(victim.read_bytes())
    data[-40] ^= 0x01                                    # inside the trailer (the end: digest and magic)
    victim.write_bytes(bytes(data))
    res = cloud.asr("point", "verify", p.vm, point, *VAULT, "--json", check=False)
    assert res.returncode == 62 and victim.name in res.stdout, res.stdout

    # the damaged trailer cannot be indexed: a rebuild names it and fails
    res = cloud.asr("storage", "rebuild-index", "store1", *VAULT, "--json", check=False)
    assert res.returncode == 62 and victim.name in res.stdout, (res.returncode, res.stdout, res.stderr)
    shutil.copy(backup, victim)

    # the index loses its chunk rows; a rebuild from the trailers brings exports back
    index = next((cloud.data_dir / "replication").rglob("store1.index.db"))
    cloud.stop()
    conn = sqlite3.connect(index)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "chunks" in tables, tables
        conn.execute("DELETE FROM chunks")
        conn.commit()
    finally:
        conn.close()
    cloud.start()
    res = cloud.asr("point", "verify", p.vm, point, *VAULT, "--json", check=False)
    assert res.returncode == 62, res.stdout
    doc = cloud.asr_json("storage", "rebuild-index", "store1", *VAULT)
    assert int(doc["packs"]) >= 1 and int(doc["blobs"]) >= 1 and doc["damaged_packs"] == [], doc
    assert p.verify(point)["ok"] is True
    for i, ref in enumerate(refs):
        out = p.export(point, i, tmp_path / f"after-{i}.raw")
        assert compare(out, "raw", ref, "raw").returncode == 0
