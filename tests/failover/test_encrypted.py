"""Issue 5, must-show 6: an encrypted VM fails over only with the right key file; a missing or
wrong key is refused with a clear error and nothing is materialised."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from chunkfmt import CustomerKey
from tests.failover.fixture import VAULT, asr_job, assert_disks_equal, recovered
from tests.harness import Cloud
from tests.replication.fixture import protect


def test_encrypted_failover_needs_the_right_key(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path, encrypt=True)
    p.once()
    refs = p.snapshot_raw(tmp_path, "p0")
    storage_dir = next((cloud.data_dir).rglob("store1"))
    wrong = tmp_path / "wrong.key"
    CustomerKey.generate().save(wrong)

    res = cloud.asr("failover", "test", p.vm, *VAULT, check=False)
    assert res.returncode == 80 and "--encryption-key-file" in res.stderr, res.stderr
    res = cloud.asr("failover", "test", p.vm, *VAULT, "--encryption-key-file", str(wrong), check=False)
    assert res.returncode == 80 and "not the key this VM was encrypted with" in res.stderr, res.stderr
    assert recovered(p) == []
    assert not (storage_dir / "recovered").exists() or not any((storage_dir / "recovered").iterdir())
    assert cloud.asr_json("vm", "show", p.vm, *VAULT)["protection_state"] == "Protected"

    right = p.site.root / "prov1" / "customer.key"
    job = asr_job(p, "failover", "test", p.vm, "--encryption-key-file", str(right))
    assert job["state"] == "Succeeded", job
    [rvm] = recovered(p)
    assert_disks_equal(rvm, refs)
    # the key is never stored by the cloud: neither its text nor its bytes are in any of its files
    doc = json.loads(right.read_text())
    secret = base64.b64decode(doc["key"])
    for f in cloud.data_dir.rglob("*"):
        if f.is_file() and f.stat().st_size < 64 << 20:
            data = f.read_bytes()
            assert doc["key"].encode() not in data and secret not in data, f
