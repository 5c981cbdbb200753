"""Issue 12, must-show 1: every daemon serves metrics that ``promtool check metrics`` accepts,
and their values are what the test made happen: RPO of a VM whose last point the test knows
(the injected clock), bytes shipped by the cycles it ran, cycles and resyncs, jobs by kind and
outcome, store size against the pack files on disk, pending commands, gRPC calls by status;
the provider's relayed commands, syncs and connected agents; the agent's cycles, bytes sent and
fenced VMs. Along the way: one log line per job start and end, and per health change."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from asrpb import control_pb2
from tests.failover.fixture import asr_job
from tests.harness import BIN, Cloud, Procs, Site, base_env, free_port, wait_for
from tests.observe.scrape import Samples, page, promtool_check, samples, value
from tests.replication.fixture import protect

VAULT = "contoso"


def _rows(cloud: Cloud, sql: str) -> list[Any]:
    return cloud.sql(sql)


def _lines(text: str) -> list[dict[str, Any]]:
    out = []
    for ln in text.splitlines():
        if ln.startswith("{"):
            try:
                out.append(json.loads(ln))
            except ValueError:
                continue
    return out


def _checked(port: int) -> Samples:
    text = page(port)
    promtool_check(text)
    return samples(text)


def _pack_bytes(cloud: Cloud) -> int:
    """Bytes of the pack files on disk in the (one) storage account."""
    [account] = _rows(cloud, "SELECT location FROM storage_accounts")
    return sum(f.stat().st_size for f in Path(account["location"]).rglob("*") if f.is_file() and "packs" in f.parts)


def _set_clock(path: Path, t: float) -> None:
    path.write_text(f"{t}\n")


def test_the_daemons_metrics_equal_what_happened(procs: Procs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = float(int(time.time()))
    clock = tmp_path / "clock"
    _set_clock(clock, t0)
    cloud = Cloud(procs, tmp_path / "cloud", clock_file=clock)
    cport, pport, aport = free_port(), free_port(), free_port()
    cfg = cloud.data_dir / "cloudsvc.toml"
    cfg.write_text(cfg.read_text().replace('metrics_listen = ""', f'metrics_listen = "127.0.0.1:{cport}"'))
    cloud.start()
    start_provider, start_agent = Site.start_provider, Site.start_agent
    monkeypatch.setattr(Site, "start_provider", lambda self, name="prov1", **kw: start_provider(
        self, name, metrics_listen=f"127.0.0.1:{pport}", **kw))
    monkeypatch.setattr(Site, "start_agent", lambda self, host, **kw: start_agent(
        self, host, metrics_listen=f"127.0.0.1:{aport}", **kw))
    p = protect(cloud, tmp_path)             # the agent's own schedule starts hours from now
    vm = {"vault": VAULT, "vm": p.vm, "vm_id": p.vm_id}

    # three cycles: the initial copy, an incremental one, a resync after the agent lost its state
    results = [p.once()]
    _set_clock(clock, t0 + 10)
    p.write(0, 0, 65536, 0x42)
    results.append(p.once())
    (p.site.root / "hv01" / "replication-state" / f"{p.vm_id}.json").unlink()
    _set_clock(clock, t0 + 20)
    results.append(p.once())
    assert [r["modes"][0] for r in results] == ["initial", "incremental", "resync"]
    points = _rows(cloud, "SELECT * FROM recovery_points ORDER BY created_at")
    assert [pt["uploaded_bytes"] for pt in points] == [r["bytes_sent"] for r in results]
    last_point = max(pt["created_at"] for pt in points)
    assert last_point == t0 + 20
    _set_clock(clock, t0 + 120)

    for _ in range(2):
        cloud.asr("vault", "list")
    assert cloud.asr("vault", "show", "nope", check=False).returncode == 40

    # ---- the cloud ------------------------------------------------------------------------
    s = _checked(cport)
    assert value(s, "asr_vm_rpo_seconds", **vm) == 100.0                   # t0+120 - (t0+20)
    assert value(s, "asr_vm_last_point_timestamp_seconds", **vm) == last_point
    assert value(s, "asr_vm_shipped_bytes_total", **vm) == sum(r["bytes_sent"] for r in results) > 0
    assert value(s, "asr_vm_cycles_total", **vm) == 3
    assert value(s, "asr_vm_resyncs_total", **vm) == 1
    assert value(s, "asr_vm_last_cycle_seconds", **vm) == 0.0             # the clock stood still during it
    assert value(s, "asr_vm_recovery_points", **vm) == 3
    assert value(s, "asr_vm_initial_replication_ratio", **vm) == 1.0
    assert value(s, "asr_vm_health", **vm, state="Normal") == 1.0
    assert value(s, "asr_vm_health", **vm, state="Warning") == 0.0
    assert value(s, "asr_vm_info", **vm, state="Protected", side="Primary", cloud="gold") == 1.0
    jobs = Counter((r["kind"], r["state"]) for r in _rows(cloud, "SELECT kind, state FROM jobs"))
    assert jobs[("EnableProtection", "Succeeded")] == 1
    assert {(dict(ls)["kind"], dict(ls)["state"]): v for (n, ls), v in s.items() if n == "asr_jobs"} == jobs
    assert value(s, "asr_storage_bytes", vault=VAULT, storage="store1") == _pack_bytes(cloud) > 0
    assert value(s, "asr_storage_upload_sessions", vault=VAULT, storage="store1") == 0   # every cycle ended
    assert value(s, "asr_storage_oldest_session_timestamp_seconds", vault=VAULT, storage="store1") is None
    assert value(s, "asr_commands_pending", vault=VAULT) is None          # every command completed
    assert value(s, "asr_server_connected", vault=VAULT, role="agent", server="hv01") == 1.0
    op = {"grpc_service": "asr.v1.Operator", "grpc_type": "unary"}
    assert value(s, "grpc_server_handled_total", **op, grpc_method="ListVaults", grpc_code="OK") == 2
    assert value(s, "grpc_server_handled_total", **op, grpc_method="GetVault", grpc_code="NotFound") == 1
    assert value(s, "grpc_server_handling_seconds_count", **op, grpc_method="GetVault", grpc_code="NotFound") == 1
    assert value(s, "asr_rpc_errors_total", grpc_method="GetVault", asr_code="ASR-0040", grpc_code="NotFound") == 1
    assert value(s, "grpc_server_handled_total", grpc_method="CommitPoint", grpc_code="OK",
                 grpc_type="client_stream") == 3

    # one log line per job start and end
    log = _lines(cloud.proc.text())  # type: ignore[union-attr]
    job_lines = [(d["msg"].split(":")[0].split()[-1], d["kind"]) for d in log if d["logger"] == "cloudsvc.jobs"]
    assert ("started", "EnableProtection") in job_lines and ("succeeded", "EnableProtection") in job_lines
    assert len([j for j in job_lines if j[1] == "EnableProtection"]) == 2, job_lines

    # health follows the injected clock; each change is logged once, at its priority
    def health_lines() -> list[tuple[str, str, str]]:
        return [(d["level"], d["health"], d["was"]) for d in _lines(cloud.proc.text())  # type: ignore[union-attr]
                if d.get("vm") == p.vm and "health" in d]

    _set_clock(clock, last_point + 200)       # older than 2F + 60 s: Warning
    assert value(_checked(cport), "asr_vm_health", **vm, state="Warning") == 1.0
    wait_for(lambda: ("warning", "Warning", "Normal") in health_lines(), 30, what="the Warning line")
    _set_clock(clock, last_point + 1000)      # older than 6F + 300 s: Critical
    s = _checked(cport)
    assert value(s, "asr_vm_health", **vm, state="Critical") == 1.0
    assert value(s, "asr_vm_rpo_seconds", **vm) == 1000.0
    wait_for(lambda: ("error", "Critical", "Warning") in health_lines(), 30, what="the Critical line")
    assert health_lines() == [("warning", "Warning", "Normal"), ("error", "Critical", "Warning")]

    # ---- the provider ---------------------------------------------------------------------
    def provider_page() -> Samples:
        return _checked(pport)

    wait_for(lambda: value(provider_page(), "asr_provider_agents_connected", vault=VAULT) == 1.0, 30,
             what="the agent connected after the clock moved")
    kinds: Counter[str] = Counter()
    for r in _rows(cloud, "SELECT body FROM commands WHERE provider='prov1'"):
        cmd = control_pb2.Command()
        cmd.ParseFromString(r["body"])
        kinds[cmd.WhichOneof("body")] += 1
    assert kinds["configure_host"] == 1 and kinds["enable_replication"] == 1, kinds
    s = provider_page()
    relayed = {dict(ls)["kind"]: v for (n, ls), v in s.items()
               if n == "asr_provider_commands_total" and dict(ls)["outcome"] == "relayed"}
    assert relayed == kinds
    assert value(s, "asr_provider_results_reported_total", vault=VAULT, result="ok") == sum(kinds.values())
    assert value(s, "asr_provider_agent_connected", vault=VAULT, host="hv01", cloud="gold") == 1.0
    assert value(s, "asr_cloud_link_state", vault=VAULT, state="Connected") == 1.0
    assert value(s, "asr_cloud_link_endpoint", vault=VAULT, endpoint=cloud.endpoint) == 1.0
    assert value(s, "asr_cloud_link_endpoint_moves_total", vault=VAULT) == 0.0
    assert (value(s, "grpc_server_handled_total", grpc_service="asr.v1.HostLink", grpc_method="ReportInventory",
                  grpc_code="OK") or 0) >= 1

    def syncs_agree() -> bool:
        before = p.site.provider_proc.text()  # type: ignore[union-attr]
        n = value(provider_page(), "asr_provider_syncs_total", vault=VAULT)
        after = p.site.provider_proc.text()  # type: ignore[union-attr]
        return before == after and n == sum(d["msg"] == "synced inventory" for d in _lines(after))

    wait_for(syncs_agree, 30, what="syncs counted == synced inventory lines")

    # ---- the agent: a planned failover's final cycle runs in the daemon, then fences the VM -----
    s = _checked(aport)
    assert value(s, "asr_agent_vm_fenced", vault=VAULT, vm=p.vm) == 0.0
    assert value(s, "asr_agent_vms_replicating", vault=VAULT) == 1.0
    assert value(s, "asr_agent_cycles_total", vault=VAULT, vm=p.vm) is None   # `once` ran them, not the daemon
    assert asr_job(p, "failover", "planned", p.vm)["state"] == "Succeeded"
    final = _rows(cloud, "SELECT * FROM recovery_points ORDER BY created_at DESC, committed_at DESC")[0]
    s = _checked(aport)
    assert value(s, "asr_agent_cycles_total", vault=VAULT, vm=p.vm) == 1
    assert value(s, "asr_agent_sent_bytes_total", vault=VAULT, vm=p.vm) == final["uploaded_bytes"]
    assert value(s, "asr_agent_cycle_seconds_count", vault=VAULT) == 1
    assert value(s, "asr_agent_vm_fenced", vault=VAULT, vm=p.vm) == 1.0
    assert value(s, "asr_agent_fenced_vms", vault=VAULT) == 1.0
    assert value(s, "asr_agent_vms_replicating", vault=VAULT) == 0.0
    s = _checked(cport)
    assert value(s, "asr_vm_rpo_seconds", **vm) is None                   # failed over: no RPO
    assert value(s, "asr_vm_info", **vm, state="FailoverCommitPending", side="Recovery") == 1.0
    assert value(s, "asr_vm_cycles_total", **vm) == 4
    assert value(s, "asr_vm_shipped_bytes_total", **vm) == sum(r["bytes_sent"] for r in results) + \
        final["uploaded_bytes"]
    assert value(s, "asr_jobs", vault=VAULT, kind="PlannedFailover", state="Succeeded") == 1
    # the agent's scheduler ran its sync job every 5 s all along, and said nothing at info
    agent_log = p.site.agents["hv01"].text()
    assert "point committed" in agent_log and "Running job" not in agent_log and "executed successfully" \
        not in agent_log, agent_log[-3000:]

    # a command the site has not taken yet is pending, with its age
    p.site.provider_proc.stop()  # type: ignore[union-attr]
    cloud.asr("cloud", "protect", "gold", "--vault", VAULT, "--storage", "store1", "--copy-frequency", "30s")
    [pending] = _rows(cloud, "SELECT created_at FROM commands WHERE state='pending'")
    s = _checked(cport)
    assert value(s, "asr_commands_pending", vault=VAULT, provider="prov1") == 1
    assert value(s, "asr_commands_oldest_pending_timestamp_seconds", vault=VAULT, provider="prov1") == \
        pending["created_at"]

    # a restarted cloud service: the counters are the vault's, and the store size is read
    # without opening the store
    cloud.restart()
    s = _checked(cport)
    assert value(s, "asr_vm_cycles_total", **vm) == 4
    assert value(s, "asr_storage_bytes", vault=VAULT, storage="store1") == _pack_bytes(cloud) > 0
    assert value(s, "asr_storage_upload_sessions", vault=VAULT, storage="store1") == 0


def test_metrics_are_off_by_default_and_refused_when_the_port_is_taken(procs: Procs, tmp_path: Path) -> None:
    cloud = Cloud(procs, tmp_path / "cloud")
    assert 'metrics_listen = ""' in (cloud.data_dir / "cloudsvc.toml").read_text()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = cloud.data_dir / "cloudsvc.toml"
        cfg.write_text(cfg.read_text().replace('metrics_listen = ""', f'metrics_listen = "127.0.0.1:{port}"'))
        res = subprocess.run([str(BIN / "asr-cloudsvc"), "serve", "--data-dir", str(cloud.data_dir)],
                             env=base_env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 14, res.stderr
    assert "ASR-0014" in res.stderr and "metrics_listen" in res.stderr and "Traceback" not in res.stderr
