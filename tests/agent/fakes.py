"""In-process doubles for the agent's unit tests: a fake Replication service (the cloud's
side of a cycle, enough to commit points), a host with one VM on real small disk images, and
an AgentRuntime that needs no daemon."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.commands import register_builtin
from agent.hypervisor import LocalHypervisor
from agent.replication.engine import Engine
from agent.runtime import AgentRuntime
from agent.settings import Settings
from asrclock import FakeClock
from asrerrors import AsrError
from asrpb import control_pb2, inventory_pb2, replication_pb2
from tests.hv import qemu

MiB = 1 << 20
VAULT = "vault-1"


class FakeReplication:
    """``rpc(method, request, timeout=...)`` like agent.replication.cycle._Rpc. Every call is
    recorded as (method, request); ``fail[method]`` is raised (once per call) instead of an
    answer while it is set. Points are committed in memory."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, AsrError] = {}
        self.points: list[str] = []
        self.epoch_state = "Protected"
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def methods(self) -> list[str]:
        with self._lock:
            return [m for m, _ in self.calls]

    def requests(self, method: str) -> list[Any]:
        with self._lock:
            return [r for m, r in self.calls if m == method]

    def __call__(self, method: str, request: Any, timeout: float = 300.0) -> Any:
        if method == "PutChunks":   # messages built as wire bytes: read as the cloud reads them
            request = [m.parsed() for m in request]
        elif method == "CommitPoint":
            request = list(request)  # a stream: the cloud reads it whole
        with self._lock:
            self.calls.append((method, request))
            err = self.fail.get(method)
        if err is not None:
            raise err
        if method == "BeginCycle":
            return replication_pb2.BeginCycleReply(session_id=f"s{next(self._ids)}",
                                                   base_point_id=self.points[-1] if self.points else "")
        if method == "Missing":
            return replication_pb2.MissingReply(ids=request.ids)
        if method == "PutChunks":
            return replication_pb2.PutChunksReply(received=sum(len(m.ids) for m in request))
        if method == "CommitPoint":
            point = f"p{next(self._ids)}"
            self.points.append(point)
            return replication_pb2.PointAck(point_id=point, created_at=request[0].created_at)
        if method == "ReportProgress":
            return replication_pb2.ProgressAck()
        if method == "CheckEpoch":
            return replication_pb2.EpochStatus(epoch=request.epoch, state=self.epoch_state)
        raise AssertionError(f"unexpected call {method}")


@dataclass
class Host:
    root: Path
    hv: LocalHypervisor
    settings: Settings
    clock: FakeClock
    rpc: FakeReplication
    vms: dict[str, str] = field(default_factory=dict)   # name -> vm_id
    engines: list[Engine] = field(default_factory=list)

    def add_vm(self, name: str, epoch: int = 2, hook: list[str] | None = None, app_hours: int = 0,
               start: str = "now") -> str:
        disk = self.root / f"{name}-os.vhdx"
        qemu.create(disk, "vhdx-dynamic-1m", 2 * MiB)
        vm = self.hv.create(name, str(disk), guest_os="ubuntu-22.04", app_quiesce_hook=hook)
        self.hv.start(name)
        self.hv.write(name, 0, 0, b"\x11" * 65536)
        policy = inventory_pb2.Policy(copy_frequency_seconds=30, retention_hours=2, app_consistent_hours=app_hours,
                                      start=start)
        self.settings.enable(control_pb2.EnableReplication(vm_id=vm.vm_id, vm_name=name, vault_id=VAULT,
                                                           policy=policy), self.clock.now(), epoch=epoch)
        self.vms[name] = vm.vm_id
        return vm.vm_id

    def engine(self) -> Engine:
        e = Engine(self.hv, self.settings, None, "fake", VAULT, self.clock, str(self.root / "state"), workers=1,
                   rpc=self.rpc)
        self.engines.append(e)
        return e

    def runtime(self, engine: Engine | None = None) -> AgentRuntime:
        rt = AgentRuntime(config=None, ident=SimpleNamespace(name="hv01", state_dir=str(self.root / "state")),  # type: ignore[arg-type]
                          clock=self.clock, hv=self.hv, link=None, settings=self.settings,  # type: ignore[arg-type]
                          stopping=threading.Event())
        register_builtin(rt)
        if engine is not None:
            rt.replication = engine
            from agent.replication import replicate_now

            rt.handlers["replicate_now"] = replicate_now
        return rt

    def close(self) -> None:
        for e in self.engines:
            e.stop()
        self.hv.close()


def make_host(tmp_path: Path) -> Host:
    state = tmp_path / "state"
    state.mkdir()
    clock = FakeClock()
    return Host(tmp_path, LocalHypervisor(str(tmp_path / "vms"), clock), Settings(str(state)), clock,
                FakeReplication())


def command(kind: str, vm_id: str, vm_name: str, epoch: int, **body: Any) -> control_pb2.Command:
    cls: Callable[..., Any] = {
        "enable_replication": control_pb2.EnableReplication, "disable_replication": control_pb2.DisableReplication,
        "power_vm": control_pb2.PowerVm, "replicate_now": control_pb2.ReplicateNow,
        "failback": control_pb2.Failback}[kind]
    return control_pb2.Command(id=f"c-{kind}-{epoch}", epoch=epoch,
                               **{kind: cls(host="hv01", vm_id=vm_id, vm_name=vm_name, **body)})
