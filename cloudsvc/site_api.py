"""Services for on-premises servers: Registration (unauthenticated) and Site (providers and
agents, each call authorised from its vault-issued certificate)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from asrchannel.authz import current_identity
from asrpb import common_pb2, control_pb2, registration_pb2, registration_pb2_grpc, site_pb2, site_pb2_grpc
from cloudsvc.service import CloudService

log = logging.getLogger(__name__)


class RegistrationApi(registration_pb2_grpc.RegistrationServicer):
    def __init__(self, svc: CloudService) -> None:
        self.svc = svc

    def Register(self, request: Any, context: Any) -> registration_pb2.RegisterResponse:
        done = self.svc.registrar.register(
            vault_id=request.vault_id, role=request.role, name=request.name, csr_pem=request.csr_pem,
            secret=request.secret, force=request.force, version=request.version,
            encryption=request.encryption, key_fingerprint=request.key_fingerprint,
            provider=request.provider, addresses=list(request.addresses),
        )
        return registration_pb2.RegisterResponse(
            certificate_pem=done.certificate_pem, service_ca_pem=self.svc.service_ca.cert_pem,
            identity=done.identity, vault_name=done.vault_name,
        )


class ProviderApi:
    """The provider-only part of the Site service (mixed into SiteApi)."""

    svc: CloudService

    def SyncInventory(self, request: Any, context: Any) -> control_pb2.SyncSummary:
        ident = current_identity()
        summary = self.svc.inventory.apply_sync(ident.vault_id, ident.name, request)
        log.info("inventory synced", extra={"fields": {"provider": ident.name, "clouds": summary.clouds,
                                                       "hosts": summary.hosts, "vms": summary.vms}})
        return summary

    def Commands(self, request: Any, context: Any) -> Iterator[control_pb2.Command]:
        """Every pending command of the calling provider, oldest first, then new ones as they
        are enqueued; sent again on every reconnect until acknowledged."""
        ident = current_identity()
        sent: set[str] = set()
        while context.is_active() and not self.svc.stopping.is_set():
            for cmd in self.svc.commands.pending(ident.vault_id, ident.name):
                if cmd.id not in sent:
                    sent.add(cmd.id)
                    self.svc.commands.mark_delivered(cmd.id)
                    yield cmd
            # Woken at once by an enqueue in this process; a poll covers other processes.
            self.svc.commands.wait(1.0)

    def CompleteCommand(self, request: Any, context: Any) -> common_pb2.Empty:
        ident = current_identity()
        self.svc.commands.complete(ident.vault_id, ident.name, request)
        return common_pb2.Empty()

    def RequestProtection(self, request: Any, context: Any) -> control_pb2.ProtectionReply:
        ident = current_identity()
        vault = self.svc.vaults.get(ident.vault_id)
        nic = request.nic - 1 if request.nic > 0 else None
        return control_pb2.ProtectionReply(job_id=self.svc.protection.request_from_site(
            vault, ident.name, request.vm_name, nic, request.disable))


class SiteApi(ProviderApi, site_pb2_grpc.SiteServicer):
    def __init__(self, svc: CloudService) -> None:
        self.svc = svc

    def Heartbeat(self, request: Any, context: Any) -> site_pb2.HeartbeatResponse:
        ident = current_identity()
        self.svc.registrar.heartbeat(ident, request.version)
        cfg = self.svc.config
        return site_pb2.HeartbeatResponse(server_time=self.svc.clock.now(), identity=ident.uri,
                                          api_endpoints=cfg.endpoints,
                                          registration_endpoints=cfg.registration_endpoints)
