"""Fencing on the host, without a cloud: the engine against a fake Replication service, the
command rules through AgentRuntime.handle, and the local hypervisor's refusals."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent import fencing
from agent.replication.engine import Engine
from asrerrors import Fenced, Unreachable
from asrpb import replication_pb2
from tests.agent.fakes import Host, command, make_host
from tests.harness import BIN, free_port, run, wait_for

STALE = "VM vm1 has failed over; replication from hv01 is fenced (epoch 2, current 3)"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = make_host(tmp_path)
    yield h
    h.close()


def fence_logs(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records  # type: ignore[attr-defined]
            if r.levelno == logging.WARNING and getattr(r, "fields", {}).get("code") == "ASR-0044"]


# -- the engine --------------------------------------------------------------------------------

def test_cycles_carry_the_held_epoch(host: Host) -> None:
    vm_id = host.add_vm("vm1", epoch=7)
    res = host.engine().replicate(vm_id)
    assert res.point_id == host.rpc.points[-1]
    [begin] = host.rpc.requests("BeginCycle")
    assert (begin.vm_id, begin.epoch, begin.final) == (vm_id, 7, False)


@pytest.mark.parametrize("method", ["BeginCycle", "Missing", "PutChunks", "CommitPoint", "ReportProgress"])
def test_fenced_from_any_replication_rpc_fences_the_vm(host: Host, method: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    vm_id = host.add_vm("vm1")
    engine = host.engine()
    host.rpc.fail[method] = Fenced(STALE)
    if method == "ReportProgress":
        host.rpc.fail["CommitPoint"] = Unreachable("the cloud service is unreachable")  # the error is reported
    caplog.set_level(logging.WARNING)
    with pytest.raises((Fenced, Unreachable)):
        engine.replicate(vm_id)
    marker = host.hv.fenced("vm1")
    assert marker is not None and STALE in marker["reason"] and marker["epoch"] == 2, marker
    assert host.hv.get("vm1").power_state == "Off"            # a stale primary does not keep running
    assert host.rpc.points == []
    [logged] = fence_logs(caplog)
    assert logged["vm"] == "vm1" and STALE in logged["reason"]
    # from now on the engine refuses the VM without asking the cloud
    calls = len(host.rpc.calls)
    with pytest.raises(Fenced, match="fenced on this host"):
        engine.replicate(vm_id)
    assert len(host.rpc.calls) == calls


def test_a_fenced_vm_leaves_the_schedule_and_stays_off_it(host: Host) -> None:
    far = "00:00"   # a start hours away at most a day: the jobs exist but do not run in this test
    a = host.add_vm("vm-a", start=far)
    b = host.add_vm("vm-b", start=far)
    engine = host.engine()
    engine.start()
    wait_for(lambda: {a, b} <= set(engine._jobs), 10, what="both VMs scheduled")
    host.rpc.fail["BeginCycle"] = Fenced(STALE)
    with pytest.raises(Fenced):
        engine.replicate(a)
    assert set(engine._jobs) == {b}
    engine.sync()                                            # a settings sync does not bring it back
    assert set(engine._jobs) == {b}
    engine.stop()
    restarted = host.engine()                                # nor does a restart
    restarted.start()
    wait_for(lambda: b in restarted._jobs, 10, what="vm-b scheduled after the restart")
    assert a not in restarted._jobs
    assert host.hv.unfence("vm-a")                           # the operator's override
    restarted.sync()
    assert set(restarted._jobs) == {a, b}


def test_check_epoch_at_start_fences_the_refused_and_retries_the_unchecked(host: Host) -> None:
    a = host.add_vm("vm-a")
    b = host.add_vm("vm-b")
    engine = host.engine()
    host.rpc.fail["CheckEpoch"] = Unreachable("the cloud service is unreachable")
    engine.check_epochs()
    assert len(host.rpc.requests("CheckEpoch")) == 1         # the cloud is down: not asked about each VM
    assert host.hv.fenced("vm-a") is None and host.hv.fenced("vm-b") is None
    # the next sync asks again; now the vault says vm-a's active side moved
    host.rpc.calls.clear()
    del host.rpc.fail["CheckEpoch"]
    real = host.rpc.__call__

    def vault(method: str, request: Any, timeout: float = 300.0) -> Any:
        if method == "CheckEpoch" and request.vm_id == a:
            host.rpc.calls.append((method, request))
            raise Fenced(STALE)
        return real(method, request, timeout)

    engine.rpc = vault
    engine.check_epochs()
    assert sorted(r.vm_id for r in host.rpc.requests("CheckEpoch")) == sorted([a, b])
    assert host.rpc.requests("CheckEpoch")[0].epoch == 2
    assert host.hv.fenced("vm-a") is not None and host.hv.fenced("vm-b") is None
    assert host.hv.get("vm-a").power_state == "Off" and host.hv.get("vm-b").power_state == "Running"
    host.rpc.calls.clear()
    engine.check_epochs()                                    # both answered: not asked again
    assert host.rpc.requests("CheckEpoch") == []


def test_check_epoch_fences_when_the_vault_epoch_is_newer(host: Host) -> None:
    a = host.add_vm("vm-a", epoch=2)
    engine = host.engine()
    engine.rpc = lambda method, request, timeout=300.0: replication_pb2.EpochStatus(epoch=5, state="FailoverCommitted")
    engine.check_epochs()
    marker = host.hv.fenced("vm-a")
    assert marker is not None and marker["newer_epoch"] == 5, marker
    assert a in engine._checked


def test_final_cycle_of_planned_failover_fences_the_vm_itself(host: Host,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    vm_id = host.add_vm("vm1", epoch=3)
    rt = host.runtime(host.engine())
    caplog.set_level(logging.WARNING)
    out = rt.handle(command("replicate_now", vm_id, "vm1", 3, shutdown_first=True))
    assert out == host.rpc.points[-1]
    [begin] = host.rpc.requests("BeginCycle")
    assert begin.final and begin.epoch == 3
    marker = host.hv.fenced("vm1")
    assert marker is not None and marker["reason"] == "failed over: planned" and marker["epoch"] == 3
    assert host.hv.get("vm1").power_state == "Off"
    assert [f["reason"] for f in fence_logs(caplog)] == ["failed over: planned"]
    with pytest.raises(Fenced):
        host.hv.start("vm1")


def test_scheduled_cycles_never_run_for_a_fenced_vm(host: Host) -> None:
    vm_id = host.add_vm("vm1")
    host.hv.fence("vm1", "failed over: planned", 2)
    engine: Engine = host.engine()
    engine._scheduled(vm_id)                                 # a job that fired before the sync removed it
    assert host.rpc.calls == []


# -- commands and their epochs ---------------------------------------------------------------

def test_a_command_older_than_the_held_epoch_is_refused(host: Host) -> None:
    vm_id = host.add_vm("vm1", epoch=4)
    rt = host.runtime()
    with pytest.raises(Fenced, match="command from epoch 3 is older than this host's epoch 4"):
        rt.handle(command("power_vm", vm_id, "vm1", 3, action="stop"))
    assert host.hv.get("vm1").power_state == "Running"       # not carried out
    with pytest.raises(Fenced, match="older"):
        rt.handle(command("enable_replication", vm_id, "vm1", 3))
    assert host.settings.get(vm_id).epoch == 4  # type: ignore[union-attr]


def test_a_newer_command_is_carried_out_and_then_the_vm_is_fenced(host: Host) -> None:
    vm_id = host.add_vm("vm1", epoch=2)
    rt = host.runtime(host.engine())
    assert rt.handle(command("power_vm", vm_id, "vm1", 2, action="stop")) == "VM vm1 stopped"
    assert host.hv.fenced("vm1") is None                     # the same epoch: nothing stale
    host.hv.start("vm1")
    rt.handle(command("power_vm", vm_id, "vm1", 3, action="stop"))   # unplanned failover's shutdown
    assert host.hv.get("vm1").power_state == "Off"
    marker = host.hv.fenced("vm1")
    assert marker is not None and (marker["epoch"], marker["newer_epoch"]) == (2, 3), marker


def test_a_newer_start_is_not_carried_out(host: Host) -> None:
    vm_id = host.add_vm("vm1", epoch=2)
    host.hv.stop("vm1")
    rt = host.runtime()
    with pytest.raises(Fenced, match="was not started"):
        rt.handle(command("power_vm", vm_id, "vm1", 3, action="start"))
    assert host.hv.get("vm1").power_state == "Off" and host.hv.fenced("vm1") is not None


def test_enable_replication_grants_its_epoch_and_clears_the_fence(host: Host) -> None:
    vm_id = host.add_vm("vm1", epoch=2)
    engine = host.engine()
    rt = host.runtime(engine)
    host.hv.fence("vm1", "failed over: planned", 2)
    out = rt.handle(command("enable_replication", vm_id, "vm1", 5, vault_id="vault-1"))
    assert "epoch 5" in out
    assert host.settings.get(vm_id).epoch == 5  # type: ignore[union-attr]
    assert host.hv.fenced("vm1") is None and vm_id in engine._checked
    assert rt.handle(command("power_vm", vm_id, "vm1", 5, action="start")) == "VM vm1 started"
    engine.replicate(vm_id)
    assert host.rpc.requests("BeginCycle")[-1].epoch == 5


def test_commands_without_an_epoch_are_not_checked(host: Host) -> None:
    vm_id = host.add_vm("vm1", epoch=4)
    rt = host.runtime()
    rt.handle(command("power_vm", vm_id, "vm1", 0, action="stop"))
    assert host.hv.fenced("vm1") is None and host.hv.get("vm1").power_state == "Off"


def test_grant_after_failback(host: Host) -> None:
    vm_id = host.add_vm("vm1", epoch=2)
    host.hv.fence("vm1", "failed over: planned", 2)
    fencing.grant(host.runtime(), vm_id, "vm1", 4)
    assert host.settings.get(vm_id).epoch == 4 and host.hv.fenced("vm1") is None  # type: ignore[union-attr]


def test_failback_grants_only_after_its_blocks_were_written(host: Host) -> None:
    from agent import failback

    vm_id = host.add_vm("vm1", epoch=2)
    host.hv.fence("vm1", "failed over: planned", 2)
    rt = host.runtime()

    class Down:
        channel = grpc.insecure_channel(f"127.0.0.1:{free_port()}")   # nothing listens: Diff fails

    rt.link = Down()  # type: ignore[assignment]
    failback.register(rt)
    with pytest.raises(Unreachable):
        rt.handle(command("failback", vm_id, "vm1", 3, session_id="fb-1", start_vm=True))
    Down.channel.close()
    assert host.hv.fenced("vm1") is not None and host.settings.get(vm_id).epoch == 2  # type: ignore[union-attr]
    assert host.hv.get("vm1").power_state == "Off"


# -- the local hypervisor and its command line ----------------------------------------------

def test_the_fence_marker_is_durable_and_refuses_start_and_writes(host: Host) -> None:
    host.add_vm("vm1")
    marker = host.hv.fence("vm1", "failed over: planned", 2, 3)
    on_disk = json.loads((host.root / "vms" / ".state" / "vm1" / "fenced.json").read_text())
    assert on_disk == marker and set(marker) >= {"reason", "epoch", "newer_epoch", "fenced_at", "vm_id"}
    assert host.hv.get("vm1").power_state == "Off"
    with pytest.raises(Fenced, match="failed over: planned"):
        host.hv.start("vm1")
    with pytest.raises(Fenced, match="guest writes are refused"):
        host.hv.write("vm1", 0, 0, b"x")


def test_a_fenced_vm_left_running_is_powered_off_at_start(host: Host) -> None:
    host.add_vm("vm1")
    paths = host.root / "vms" / ".state" / "vm1" / "fenced.json"
    paths.write_text(json.dumps({"reason": "failed over: planned", "epoch": 2}))   # died before the power-off
    with pytest.raises(Fenced):
        host.hv.write("vm1", 0, 0, b"x")                     # refused even while still marked running
    host.hv.recover()
    assert host.hv.get("vm1").power_state == "Off"


def agent_cli(host: Host, *args: str) -> Any:
    cfg = host.root / "agent.toml"
    cfg.write_text(f'state_dir = "{host.root / "state"}"\nvm_dir = "{host.root / "vms"}"\n')
    return run([str(BIN / "asr-agent"), "vm", *args, "--config", str(cfg)], timeout=60)


def test_cli_refuses_a_fenced_vm_and_unfences_only_with_force(host: Host) -> None:
    vm_id = host.add_vm("vm1")
    host.hv.close()
    host.hv.fence("vm1", "failed over: planned", 2)
    for args in (("start", "vm1"),
                 ("write", "vm1", "--disk", "0", "--offset", "0", "--length", "10", "--pattern", "1"),
                 ("workload", "vm1", "--rate", "1", "--duration", "5")):
        res = agent_cli(host, *args)
        assert res.returncode == 44, (args, res.stderr)
        assert "ASR-0044" in res.stderr and "failed over: planned" in res.stderr, res.stderr
        assert "fail back" in res.stderr.lower() and "Traceback" not in res.stderr, res.stderr
    shown = agent_cli(host, "show", "vm1")
    assert "FENCED" in shown.stdout and "failed over: planned" in shown.stdout, shown.stdout
    assert json.loads(agent_cli(host, "show", "vm1", "--json").stdout)["fenced"]["reason"] == "failed over: planned"
    assert "FENCED" in agent_cli(host, "list").stdout
    res = agent_cli(host, "unfence", "vm1")
    assert res.returncode == 2 and "--force" in res.stderr and "diverge" in res.stderr, res.stderr
    assert host.hv.fenced("vm1") is not None
    res = agent_cli(host, "unfence", "vm1", "--force", "--json")
    assert res.returncode == 0, res.stderr
    assert "warning" in res.stderr and "no longer replicated" in res.stderr, res.stderr
    assert json.loads(res.stdout)["replication_settings_removed"] is True
    assert host.hv.fenced("vm1") is None and host.settings.get(vm_id) is None
    assert agent_cli(host, "start", "vm1").returncode == 0
