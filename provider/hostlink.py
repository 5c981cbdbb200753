"""The provider's server for its agents (the HostLink service).

Only agents of the provider's own vault, named as hosts in its configuration, may join:
their vault-issued certificate says both. The provider cannot consult the cloud's
revocation list on every call; a removed agent is refused by the cloud for replication and
disappears from the configuration when the operator removes it there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from asrchannel.authz import AuthInterceptor, current_identity
from asrchannel.tls import server_credentials, server_options
from asrclock import Clock
from asrerrors import PermissionDenied
from asrops.metrics import RpcMetrics
from asrpb import common_pb2, control_pb2, hostlink_pb2_grpc
from certs.identity import Identity
from provider.config import ProviderConfig
from provider.store import ProviderStore
from registration.state import SiteIdentity

log = logging.getLogger(__name__)


class HostLinkApi(hostlink_pb2_grpc.HostLinkServicer):
    def __init__(self, cfg: ProviderConfig, store: ProviderStore, clock: Clock,
                 on_inventory: Callable[[], None], on_result: Callable[[control_pb2.CommandResult], None],
                 stopping: threading.Event) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.on_inventory = on_inventory
        self.on_result = on_result
        self.stopping = stopping
        self.queued = threading.Condition()
        self.connected: dict[str, float] = {}

    def notify(self) -> None:
        with self.queued:
            self.queued.notify_all()

    def ReportInventory(self, request: Any, context: Any) -> common_pb2.Empty:
        host = current_identity().name
        self.connected[host] = self.clock.now()
        if self.store.save_inventory(host, request, self.clock.now()):
            log.info("host inventory changed", extra={"fields": {"host": host, "vms": len(request.vms)}})
            self.on_inventory()
        return common_pb2.Empty()

    def Commands(self, request: Any, context: Any) -> Iterator[control_pb2.Command]:
        host = current_identity().name
        sent: set[str] = set()
        while context.is_active() and not self.stopping.is_set():
            self.connected[host] = self.clock.now()
            for cmd in self.store.agent_queue(host):
                if cmd.id not in sent:
                    sent.add(cmd.id)
                    yield cmd
            with self.queued:
                self.queued.wait(1.0)

    def CompleteCommand(self, request: Any, context: Any) -> common_pb2.Empty:
        self.store.complete(request, self.clock.now())
        self.on_result(request)
        return common_pb2.Empty()


def build_server(cfg: ProviderConfig, ident: SiteIdentity, api: HostLinkApi,
                 metrics: RpcMetrics | None = None) -> grpc.Server:
    def check(caller: Identity, method: str) -> None:
        if caller.vault_id != ident.vault_id:
            raise PermissionDenied(f"agent {caller.name!r} belongs to another vault",
                                   action="Register the agent with this vault's key file.")
        if cfg.cloud_of(caller.name) is None:
            raise PermissionDenied(f"host {caller.name!r} is not named in this provider's configuration",
                                   action=f"Add {caller.name!r} to a cloud's hosts in {cfg.path}.")

    policy = {"/asr.v1.HostLink/": {"agent"}, "/grpc.health.v1.Health/": {"public"}}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="hostlink"),
                         interceptors=[AuthInterceptor(policy, check, metrics)], options=server_options())
    hostlink_pb2_grpc.add_HostLinkServicer_to_server(api, server)
    ca, chain, key = ident.pems()
    server.add_secure_port(cfg.listen, server_credentials(chain, key, ca))
    return server
