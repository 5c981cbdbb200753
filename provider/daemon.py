"""The running provider: VMM's voice to the vault.

Threads: heartbeats; the host-link server for agents; the inventory sync (on start, on any
change an agent reports, and every ``sync_seconds``); the command relay, which holds an
outbound stream to the cloud, queues host commands for their agents and reports results; the
metrics endpoint when ``metrics_listen`` names one (``provider.metrics``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

from asrclock import Clock, from_environment
from asrerrors import AsrError, AuthError
from asrops import allocator, environment
from asrops.lifecycle import Lifecycle, Watch
from asrops.logs import setup
from asrops.metrics import Metrics
from asrpb import control_pb2
from provider.config import ProviderConfig, load
from provider.encryption import load_key_bytes
from provider.hostlink import HostLinkApi, build_server
from provider.metrics import ProviderCollector, ProviderMetrics
from provider.store import ProviderStore
from registration.link import CloudLink, heartbeat_stuck_after
from registration.linkmetrics import CloudLinkCollector
from registration.state import SiteIdentity
from registration.state import load as load_identity

log = logging.getLogger("asr-provider")

HOST_COMMANDS = ("configure_host", "enable_replication", "disable_replication", "power_vm", "replicate_now",
                 "failback", "accept_replica", "release_replica", "replica_failover", "reverse_replicate",
                 "replica_cleanup")


class Provider:
    def __init__(self, cfg: ProviderConfig, ident: SiteIdentity, clock: Clock, stopping: threading.Event) -> None:
        self.cfg = cfg
        self.ident = ident
        self.clock = clock
        self.stopping = stopping
        self.store = ProviderStore(cfg.state_dir)
        self.link = CloudLink(ident, clock, cfg.proxy)
        self.sync_needed = threading.Event()
        self.sync_needed.set()
        self.results = threading.Event()
        self.api = HostLinkApi(cfg, self.store, clock, self.sync_needed.set, self._on_result, stopping)
        self.metrics = Metrics()
        self.counters = ProviderMetrics(self.metrics.registry, ident.vault_name)
        self.metrics.register(ProviderCollector(cfg, self.store, ident.vault_name,
                                                lambda host: self.api.connected.get(host, 0.0), self.agent_connected))
        self.metrics.register(CloudLinkCollector(self.link, ident.vault_name))
        self.server = build_server(cfg, ident, self.api, self.metrics.rpc)
        self._stream: Any = None

    # ---- inventory -----------------------------------------------------------------------
    def agent_connected(self, host: str) -> bool:
        """The host's agent reported within three heartbeats (at least 10 s)."""
        seen = self.api.connected.get(host, 0.0)
        return self.clock.now() - seen < max(10.0, 3 * self.cfg.heartbeat_seconds)

    def build_sync(self) -> control_pb2.InventorySync:
        now = self.clock.now()
        msg = control_pb2.InventorySync(generated_at=now)
        for cloud in self.cfg.clouds:
            if not cloud.sync:
                continue
            c = msg.clouds.add(name=cloud.name, networks=cloud.networks)
            for host in cloud.hosts:
                seen = self.api.connected.get(host, 0.0)
                h = c.hosts.add(name=host, connected=self.agent_connected(host), last_seen=seen)
                stored = self.store.inventory(host)
                if stored is not None:
                    h.replica_address = stored[0].replica_address
                    h.replica_free_bytes = stored[0].replica_free_bytes
                    for vm in stored[0].vms:
                        v = h.vms.add()
                        v.CopyFrom(vm)
                        v.host = host
        return msg

    def sync_loop(self) -> None:
        while not self.stopping.is_set():
            self.sync_needed.wait(self.cfg.sync_seconds)
            if self.stopping.is_set():
                return
            self.sync_needed.clear()
            # Let a burst of agent reports settle into one sync.
            self.stopping.wait(0.2)
            try:
                summary = self.link.call(self.link.site.SyncInventory, self.build_sync(), timeout=60)
                log.info("synced inventory", extra={"fields": {"vms": getattr(summary, "vms", 0)}})
                self.counters.synced(self.clock.now(), int(getattr(summary, "vms", 0)))
            except AsrError as err:
                log.warning("inventory sync failed: %s", err, extra={"fields": {"code": err.code}})
                self.counters.sync_failed(err.code)
                self.sync_needed.set()
                # refused (e.g. another provider owns a cloud this one names): retrying at once
                # cannot help; an outage can
                self.stopping.wait(self.cfg.sync_seconds if isinstance(err, AuthError) else 1.0)

    # ---- commands --------------------------------------------------------------------------
    def dispatch(self, cmd: control_pb2.Command) -> None:
        done = self.store.done(cmd.id)
        if done is not None:
            # Delivered again (our acknowledgement was lost): answer, do not execute again.
            self.counters.command(cmd.WhichOneof("body") or "", "replayed")
            self._report(done)
            return
        kind = cmd.WhichOneof("body")
        if kind not in HOST_COMMANDS:
            self.counters.command(kind or "", "refused")
            self._finish(control_pb2.CommandResult(id=cmd.id, ok=False, error_code="ASR-0002",
                                                   error_message=f"provider does not know command {kind!r}"))
            return
        body = getattr(cmd, kind)
        if self.cfg.cloud_of(body.host) is None:
            self.counters.command(kind, "refused")
            self._finish(control_pb2.CommandResult(
                id=cmd.id, ok=False, error_code="ASR-0040",
                error_message=f"host {body.host!r} is not in provider {self.ident.name}'s configuration"))
            return
        if kind == "enable_replication" and body.policy.encrypt:
            key = load_key_bytes(self.cfg.state_dir)
            if key is None:
                self.counters.command(kind, "refused")
                self._finish(control_pb2.CommandResult(id=cmd.id, ok=False, error_code="ASR-0080",
                                                       error_message="this provider has no customer-managed key"))
                return
            body.customer_key = key  # travels only on the host link, never to the cloud
        body_vault = getattr(body, "vault_id", None)
        if body_vault is not None and not body_vault:
            body.vault_id = self.ident.vault_id
        self.store.queue_for_agent(body.host, cmd, self.clock.now())
        self.counters.command(kind, "relayed")
        self.api.notify()

    def _finish(self, result: control_pb2.CommandResult) -> None:
        self.store.complete(result, self.clock.now())
        self._on_result(result)

    def _on_result(self, result: control_pb2.CommandResult) -> None:
        self.results.set()

    def _report(self, result: control_pb2.CommandResult) -> bool:
        try:
            self.link.call(self.link.site.CompleteCommand, result, timeout=30)
        except AsrError as err:
            log.warning("reporting command %s failed: %s", result.id, err)
            self.counters.report(None)
            return False
        self.store.mark_reported(result.id)
        self.counters.report(result.ok)
        return True

    def report_loop(self) -> None:
        while not self.stopping.is_set():
            self.results.wait(1.0)
            self.results.clear()
            for res in self.store.unreported():
                if not self._report(res):
                    break

    def command_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._stream = self.link.site.Commands(control_pb2.CommandPoll(version="0.1.0"))
                for cmd in self._stream:
                    log.info("command received", extra={"fields": {"id": cmd.id, "kind": cmd.WhichOneof("body")}})
                    self.dispatch(cmd)
            except grpc.RpcError as exc:
                if not self.stopping.is_set() and exc.code() != grpc.StatusCode.CANCELLED:
                    log.warning("command stream lost: %s", exc.code())
            self.stopping.wait(1.0)

    # ---- life ------------------------------------------------------------------------------
    def start(self, watch: Watch | None = None) -> list[threading.Thread]:
        """Start serving agents and the loops; ``watch`` is the daemon core's (see
        ``asrops.lifecycle``): the heartbeat loop must keep turning."""
        self.metrics.serve(self.cfg.metrics_listen, self.cfg.path)
        self.server.start()
        beat = (watch("heartbeat", heartbeat_stuck_after(self.cfg.heartbeat_seconds)) if watch
                else lambda: None)
        threads = []
        for name, fn in (("heartbeat", lambda: self.link.run_heartbeats(self.cfg.heartbeat_seconds, self.stopping,
                                                                          beat)),
                         ("sync", self.sync_loop), ("commands", self.command_loop), ("results", self.report_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            threads.append(t)
        return threads

    def stop(self, threads: list[threading.Thread]) -> None:
        self.stopping.set()
        self.sync_needed.set()
        self.results.set()
        self.api.notify()
        if self._stream is not None:
            self._stream.cancel()
        self.server.stop(grace=2).wait()
        for t in threads:
            t.join(timeout=5)
        self.metrics.close()
        self.link.close()


def run(config_path: str, life: Lifecycle | None = None) -> int:
    """The provider's daemon core (see ``asrops.lifecycle``): a terminal or systemd passes no
    ``life`` (signals stop it); the Windows service host passes its own."""
    setup("asr-provider")
    environment.check("asr-provider")   # test hooks and bad tuning values refuse to start
    allocator.tune()
    cfg = load(config_path)
    ident = load_identity(cfg.state_dir)
    life = life or Lifecycle.for_console()
    provider = Provider(cfg, ident, from_environment(), life.stopping)
    threads = provider.start(life.watch)
    log.info("provider running", extra={"fields": {"identity": ident.identity, "listen": cfg.listen}})
    life.ready(f"provider {ident.name}")
    life.serve()
    life.stop()
    provider.stop(threads)
    log.info("stopped")
    return 0


__all__ = ["Provider", "run"]
