"""The agent's link to its provider: inventory reports and the command stream.

The agent dials the provider (inside the site, never through the proxy) with its
vault-issued certificate and pins the service CA, which issued the provider's certificate
through the vault CA.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Callable
from typing import Any

import grpc

from agent.commands import AppliedLog
from agent.runtime import AgentRuntime
from asrchannel.status import from_rpc_error
from asrchannel.tls import client_channel
from asrerrors import AsrError
from asrpb import control_pb2, hostlink_pb2, hostlink_pb2_grpc
from registration.state import write_status

log = logging.getLogger("asr-agent")


class ProviderLink:
    def __init__(self, rt: AgentRuntime, report_interval: float = 30.0) -> None:
        self.rt = rt
        self.report_interval = report_interval
        ca, cert, key = rt.ident.pems()
        self.target = rt.ident.provider_address
        self.channel = client_channel(self.target, ca, cert, key)
        self.stub = hostlink_pb2_grpc.HostLinkStub(self.channel)
        self.applied = AppliedLog(rt.ident.state_dir)
        self.state = "Unknown"
        self._stream: Any = None

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self.state:
            write_status(self.rt.ident.state_dir, {"provider": {"state": state, "target": self.target,
                                                                "detail": detail, "since": self.rt.clock.now()}})
            self.state = state
            (log.info if state == "Connected" else log.warning)(
                "provider %s", state.lower(), extra={"fields": {"target": self.target, "detail": detail}})

    def report_loop(self, beat: Callable[[], None]) -> None:
        last_digest = b""
        last_sent = 0.0
        while not self.rt.stopping.is_set():
            beat()
            try:
                inv = build_inventory(self.rt)
                # Free space moves all the time: it alone is no reason to report (and make the
                # provider sync); it travels with every report made for another reason.
                same = hostlink_pb2.HostInventory()
                same.CopyFrom(inv)
                same.replica_free_bytes = 0
                digest = hashlib.sha256(same.SerializeToString(deterministic=True)).digest()
                now = self.rt.clock.monotonic()
                if digest != last_digest or now - last_sent >= self.report_interval:
                    inv.generated_at = self.rt.clock.now()
                    self.stub.ReportInventory(inv, timeout=30)
                    last_digest, last_sent = digest, now
                    self._set_state("Connected")
            except grpc.RpcError as exc:
                self._set_state("Unreachable", str(from_rpc_error(exc, f"the provider at {self.target}")))
                last_digest = b""
            except AsrError as err:
                log.warning("inventory not reported: %s", err)
            except Exception:  # noqa: BLE001 - the report thread must outlive a bad definition
                log.exception("inventory not reported")
            self.rt.stopping.wait(0.5)

    def command_loop(self) -> None:
        while not self.rt.stopping.is_set():
            try:
                self._stream = self.stub.Commands(control_pb2.CommandPoll(version="0.1.0"))
                for cmd in self._stream:
                    self._set_state("Connected")
                    self.stub.CompleteCommand(self.apply(cmd), timeout=30)
            except grpc.RpcError as exc:
                if not self.rt.stopping.is_set() and exc.code() != grpc.StatusCode.CANCELLED:
                    self._set_state("Unreachable", str(exc.code()))
            self.rt.stopping.wait(1.0)

    def apply(self, cmd: control_pb2.Command) -> control_pb2.CommandResult:
        done = self.applied.get(cmd.id)
        if done is not None:
            return done
        kind = cmd.WhichOneof("body") or ""
        log.info("applying command", extra={"fields": {"id": cmd.id, "kind": kind}})
        try:
            output = self.rt.handle(cmd)
            result = control_pb2.CommandResult(id=cmd.id, ok=True, output=output)
        except AsrError as err:
            result = control_pb2.CommandResult(id=cmd.id, ok=False, error_code=err.code, error_message=str(err))
        except Exception as exc:  # noqa: BLE001 - a handler bug fails its command, not the agent
            log.exception("command %s failed", cmd.id)
            result = control_pb2.CommandResult(id=cmd.id, ok=False, error_code="ASR-0001", error_message=repr(exc))
        self.applied.put(result, kind, self.rt.clock.now())
        return result

    def start(self, beat: Callable[[], None] = lambda: None) -> list[threading.Thread]:
        """Start the inventory reports (calling ``beat`` on every turn, for the daemon core's
        watchdog) and the command stream."""
        threads = []
        for name, fn in (("inventory", lambda: self.report_loop(beat)), ("provider-commands", self.command_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            threads.append(t)
        return threads

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        self.channel.close()


def build_inventory(rt: AgentRuntime) -> hostlink_pb2.HostInventory:
    from vmspec.wire import spec_to_vm

    inv = hostlink_pb2.HostInventory(vms=[spec_to_vm(vm, rt.ident.name) for vm in rt.hv.list()])
    if rt.config.replica_listen:
        # site to site: where other hosts ship replicas to, and how much room there is (placement)
        path = rt.config.replica_path
        os.makedirs(path, exist_ok=True)
        inv.replica_address = rt.config.replica_listen
        inv.replica_free_bytes = shutil.disk_usage(path).free
    return inv
