"""Issue 15: a failover of an encrypted VM needs the customer-managed key, which only the
process that received it has (it is never stored). The job is therefore held by that process
from the transaction that creates it, however quickly another process's runner turns.
Regression: the other process could claim the job and fail it with EncryptionKeyError."""

from __future__ import annotations

from pathlib import Path

from tests.failover.fixture import VAULT, assert_disks_equal, recovered
from tests.harness import Procs
from tests.replication.fixture import protect
from tests.scaleout.fixture import db_one, two_services


def test_an_encrypted_failover_runs_where_its_key_is(procs: Procs, tmp_path: Path) -> None:
    a, b = two_services(procs, tmp_path)
    p = protect(a, tmp_path, encrypt=True)
    p.once()
    refs = p.snapshot_raw(tmp_path, "p0")
    key = p.site.root / "prov1" / "customer.key"
    assert b.proc is not None
    for svc, other in ((b, a), (a, b)):
        job_id = svc.asr_json("failover", "test", p.vm, *VAULT, "--encryption-key-file", str(key))["job_id"]
        job = other.asr_json("job", "wait", job_id, *VAULT)
        assert job["state"] == "Succeeded", job
        row = db_one(a, "SELECT owner FROM jobs WHERE id=?", (job_id,))
        assert row is not None and svc.proc is not None and f":{svc.proc.popen.pid}:" in row["owner"]
        [rvm] = recovered(p)
        assert_disks_equal(rvm, refs)
        done = other.asr_json("failover", "test-complete", p.vm, *VAULT, "--wait")
        assert done["state"] == "Succeeded", done
