"""The operator tool against a real cloud service and site (issue 12's CLI defects and the
event history): every answer is checked against its command's JSON Schema by the harness
(``Cloud.asr_json``); progress bars are judged on a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path
from typing import Any

from asrcli.client import Client
from asrclock import from_iso, iso_json
from asrpb import replication_pb2, replication_pb2_grpc
from tests.cli_schema import check, check_error
from tests.failover.fixture import VAULT, asr_job, recovered, vm_state
from tests.harness import BIN, Cloud, Procs, run, wait_for
from tests.replication.fixture import protect

T0 = 1_780_002_000.0 - 1_780_002_000.0 % 3600


def with_terminal(argv: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (stdout a pipe): (exit code, stdout, terminal text)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, env=env, text=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:   # EIO: every writer of the terminal has gone
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out, seen.decode(errors="replace")


def maintain(cloud: Cloud) -> None:
    client = Client(cloud.endpoint, str(cloud.credentials))
    try:
        client.call(replication_pb2_grpc.PointsStub(client.channel).RunMaintenance,
                    replication_pb2.MaintenanceRequest(vault="contoso"))
    finally:
        client.close()


def events(cloud: Cloud, *filters: str) -> list[dict[str, Any]]:
    return list(cloud.asr_json("event", "list", *VAULT, *filters))


def test_lists_events_health_and_bounds(procs: Procs, tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text(str(T0))
    cloud = Cloud(procs, tmp_path / "cloud", clock_file=clock).start()
    p = protect(cloud, tmp_path)
    point = p.once()["point_id"]

    # every list command answers an array (point list too), numbers as numbers, times as RFC 3339
    points = cloud.asr_json("point", "list", p.vm, *VAULT)
    assert [x["point_id"] for x in points] == [point] and isinstance(points[0]["uploaded_bytes"], int)
    assert points[0]["location"] == "store1"   # a vault VM's point is in its storage account
    assert from_iso(points[0]["created_at"]) == T0
    for args in (("region", "list"), ("vault", "list"), ("storage", "list", *VAULT), ("network", "list", *VAULT),
                 ("server", "list", *VAULT), ("cloud", "list", *VAULT), ("vm", "list", *VAULT),
                 ("event", "list", *VAULT), ("job", "list", *VAULT), ("recovered-vm", "list", *VAULT),
                 ("plan", "list", *VAULT)):
        assert isinstance(cloud.asr_json(*args), list), args
    # tables for people: sizes with a unit, progress in percent, app-consistent "none"
    head, row = cloud.asr("point", "list", p.vm, *VAULT).stdout.splitlines()[:2]
    assert head.split()[3] == "SIZE" and row.split()[4] in ("B", "KiB", "MiB"), (head, row)
    assert "100%" in cloud.asr("job", "list", *VAULT).stdout
    shown = cloud.asr("vm", "show", p.vm, *VAULT).stdout
    assert "app-consistent none" in shown and "noneh" not in shown

    # registration and configuration are events; --server picks one server's
    every = events(cloud)
    codes = {(e["code"], e["server"]) for e in every}
    assert {("EVT-0007", "provider/prov1"), ("EVT-0007", "agent/hv01"), ("EVT-0008", "provider/prov1")} <= codes
    assert {e["server"] for e in events(cloud, "--server", "hv01")} == {"agent/hv01"}
    assert {e["code"] for e in events(cloud, "--server", "provider/prov1")} >= {"EVT-0007", "EVT-0008"}
    assert len(events(cloud, "--limit", "2")) == 2
    assert events(cloud, "--severity", "warning") == []

    # a health change seen by maintenance is one event (not one per look), shown by vm show
    clock.write_text(str(T0 + 200))          # copy every 30 s: Warning past 2 x 30 + 60 s
    maintain(cloud)
    maintain(cloud)
    warned = events(cloud, "--severity", "warning")
    assert [(e["code"], e["severity"], e["vm_name"]) for e in warned] == [("EVT-0009", "Warning", p.vm)], warned
    assert "Normal -> Warning" in warned[0]["message"]
    assert vm_state(p)["latest_events"][0]["code"] == "EVT-0009"
    assert "replication health Normal -> Warning" in cloud.asr("vm", "show", p.vm, *VAULT).stdout
    clock.write_text(str(T0 + 600))          # Critical past 6 x 30 + 300 s
    maintain(cloud)
    assert [e["severity"] for e in events(cloud, "--severity", "critical")] == ["Critical"]
    assert [e["severity"] for e in events(cloud, "--severity", "warning")] == ["Critical", "Warning"]
    # --since: an ISO time, or a duration back from now (the events are at the injected time)
    since = iso_json(T0 + 100)
    assert [e["code"] for e in events(cloud, "--since", str(since))] == ["EVT-0009", "EVT-0009"]
    assert events(cloud, "--since", "1h") == []        # the cloud's clock is months behind this one
    assert len(events(cloud, "--since", "3650d")) == len(events(cloud))
    bad = cloud.asr("event", "list", *VAULT, "--since", "yesterday", "--json", check=False)
    assert bad.returncode == 2 and check_error(json.loads(bad.stdout))["error"]["code"] == "ASR-0002"

    # the history is bounded: 90 days on, maintenance trims what is older
    before = len(events(cloud))
    clock.write_text(str(T0 + 91 * 86400))
    maintain(cloud)
    after = events(cloud)
    assert before > 5 and all(from_iso(e["at"]) >= T0 + 86400 for e in after), after

    # job list filters
    jobs = cloud.asr_json("job", "list", *VAULT)
    assert {j["kind"] for j in jobs} == {"ConfigureProtection", "EnableProtection"}
    assert [j["kind"] for j in cloud.asr_json("job", "list", *VAULT, "--kind", "EnableProtection")] == [
        "EnableProtection"]
    assert [j["target"] for j in cloud.asr_json("job", "list", *VAULT, "--vm", p.vm_id)] == [p.vm]
    assert len(cloud.asr_json("job", "list", *VAULT, "--state", "Succeeded", "--limit", "1")) == 1
    assert cloud.asr_json("job", "list", *VAULT, "--state", "Failed") == []

    # `asr job list | head`: the reader goes away, asr stops quietly
    r, w = os.pipe()
    os.close(r)
    res = subprocess.run([str(BIN / "asr"), "job", "list", *VAULT], stdout=w, stderr=subprocess.PIPE, text=True,
                         env=cloud.env(), timeout=60, check=False)
    os.close(w)
    assert (res.returncode, res.stderr) == (141, "")

    # status of the site's daemons: for people by default, JSON on request (with its schema)
    for role, name in (("provider", "prov1"), ("agent", "hv01")):
        cfg = str(p.site.root / f"{name}.toml")
        doc = json.loads(run([str(BIN / f"asr-{role}"), "status", "--config", cfg, "--json"],
                             env=cloud.env()).stdout)
        check(f"asr-{role} status", doc)
        assert doc["cloud"]["state"] == "Connected" and doc["cloud"]["last_ok"].endswith("Z")
        text = run([str(BIN / f"asr-{role}"), "status", "--config", cfg], env=cloud.env()).stdout
        assert text.startswith("identity") and "Connected" in text and "last success" in text, text
        r, w = os.pipe()
        os.close(r)   # `asr-agent status | head`: the daemons' command lines stop quietly too
        res = subprocess.run([str(BIN / f"asr-{role}"), "status", "--config", cfg], stdout=w,
                             stderr=subprocess.PIPE, text=True, env=cloud.env(), timeout=60, check=False)
        os.close(w)
        assert (res.returncode, res.stderr) == (141, ""), res.stderr


def test_progress_bars_only_on_a_terminal(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    p.once()
    export = [str(BIN / "asr"), "point", "export", p.vm, "latest", "--disk", "0", *VAULT]
    code, _, term = with_terminal([*export, "--out", str(tmp_path / "a.raw")], cloud.env())
    assert code == 0 and "100%" in term and "8.00M/8.00M" in term and "B/s" in term, term
    code, out, term = with_terminal([*export, "--out", str(tmp_path / "b.raw"), "--json"], cloud.env())
    assert code == 0 and "100%" not in term and check("point export", json.loads(out))["bytes_written"] > 0
    piped = cloud.asr(*export[1:], "--out", str(tmp_path / "c.raw"))
    assert "100%" not in piped.stderr and "B/s" not in piped.stderr
    assert (tmp_path / "a.raw").read_bytes() == (tmp_path / "c.raw").read_bytes()

    # --wait of a failover that materialises disks: bytes, rate and time left
    code, out, term = with_terminal([str(BIN / "asr"), "failover", "test", p.vm, *VAULT, "--wait"], cloud.env())
    assert code == 0 and "12.0M/12.0M" in term and "B/s" in term, term
    job = cloud.asr_json("job", "list", *VAULT, "--kind", "TestFailover")[0]
    assert job["bytes_done"] == job["bytes_total"] == 12 << 20
    assert asr_job(p, "failover", "test-complete", p.vm)["state"] == "Succeeded"


def test_wait_at_a_manual_action_and_guarded_deletes(cloud: Cloud, tmp_path: Path) -> None:
    p = protect(cloud, tmp_path)
    p.once()
    cloud.asr("network", "create", "recnet", *VAULT, "--region", "japaneast", "--address-space", "10.9.0.0/16",
              "--subnet", "default=10.9.1.0/24")

    # --wait at a manual action says what to do and how to resume, and goes on waiting
    cloud.asr("plan", "create", "app", "--vm", p.vm, *VAULT)
    cloud.asr("plan", "add-action", "app", "--group", "1", "--when", "before", "--action-name", "dns",
              "--manual", "Point the DNS at the recovery site", *VAULT)
    err = tmp_path / "wait.err"
    with open(err, "w") as f:
        waiting = subprocess.Popen([str(BIN / "asr"), "failover", "test", "--plan", "app", "--network", "recnet",
                                    *VAULT, "--wait", "--json"], stdout=subprocess.PIPE, stderr=f,
                                   env=cloud.env(), text=True)
    told = wait_for(lambda: "asr job resume" in err.read_text() and err.read_text(), 120,
                    what="the manual action's instructions")
    assert "manual action dns" in told and "Point the DNS at the recovery site" in told
    job_id = told.split("asr job resume ")[1].split()[0]
    assert waiting.poll() is None            # still waiting for the job
    cloud.asr("job", "resume", job_id, *VAULT)
    out, _ = waiting.communicate(timeout=240)
    assert waiting.returncode == 0 and check("failover test", json.loads(out))["state"] == "Succeeded"
    assert told.count("asr job resume") == 1  # said once, not at every poll

    # in use: each refusal names what uses it (StateConflict, exit 42) and changes nothing
    [test_vm] = recovered(p)
    for args, what in ((("storage", "delete", "store1"), "replication policy of cloud(s) gold"),
                       (("network", "delete", "recnet"), test_vm["name"]),
                       (("recovered-vm", "delete", test_vm["name"]), "asr failover test-complete")):
        res = cloud.asr(*args, *VAULT, "--json", check=False)
        doc = check_error(json.loads(res.stdout))
        assert res.returncode == 42 and what in json.dumps(doc), (args, doc)
    assert [r["id"] for r in recovered(p)] == [test_vm["id"]]
    assert asr_job(p, "failover", "test-complete", "--plan", "app")["state"] == "Succeeded"
    wait_for(lambda: recovered(p) == [], 30, what="the test VM removed")
    assert cloud.asr_json("network", "delete", "recnet", *VAULT) == {"deleted": "recnet"}
    assert cloud.asr_json("network", "list", *VAULT) == []

    # a failed-over VM belongs to its failover until the VM's protection ends
    for proc in [*p.site.agents.values(), p.site.provider_proc]:
        assert proc is not None
        proc.kill9()
    assert asr_job(p, "failover", "unplanned", p.vm)["state"] == "Succeeded"
    assert asr_job(p, "failover", "commit", p.vm)["state"] == "Succeeded"
    [rvm] = recovered(p)
    res = cloud.asr("recovered-vm", "delete", rvm["id"], *VAULT, check=False)
    assert res.returncode == 42 and "FailoverCommitted" in res.stderr
    assert asr_job(p, "vm", "unprotect", p.vm, "--force")["state"] == "Succeeded"
    assert cloud.asr_json("recovered-vm", "delete", rvm["id"], *VAULT) == {"deleted": rvm["id"]}
    assert recovered(p) == [] and not Path(rvm["disks"][0]["path"]).exists()

    # the storage account: still the cloud's policy target; once moved, it can go, data and all
    res = cloud.asr("storage", "delete", "store1", *VAULT, check=False)
    assert res.returncode == 42 and "gold" in res.stderr
    cloud.asr("storage", "create", "store2", *VAULT, "--region", "japaneast")
    cloud.asr("cloud", "protect", "gold", "--storage", "store2", *VAULT)
    location = next(s["location"] for s in cloud.asr_json("storage", "list", *VAULT) if s["name"] == "store1")
    assert Path(location).exists()
    assert cloud.asr_json("storage", "delete", "store1", *VAULT) == {"deleted": "store1"}
    assert [s["name"] for s in cloud.asr_json("storage", "list", *VAULT)] == ["store2"]
    assert not Path(location).exists()
    assert {"EVT-0010"} <= {e["code"] for e in events(cloud)}
