"""Services for on-premises servers: Registration (unauthenticated) and Site (providers and
agents, each call authorised from its vault-issued certificate)."""

from __future__ import annotations

from typing import Any

from asrchannel.authz import current_identity
from asrpb import registration_pb2, registration_pb2_grpc, site_pb2, site_pb2_grpc
from cloudsvc.service import CloudService


class RegistrationApi(registration_pb2_grpc.RegistrationServicer):
    def __init__(self, svc: CloudService) -> None:
        self.svc = svc

    def Register(self, request: Any, context: Any) -> registration_pb2.RegisterResponse:
        done = self.svc.registrar.register(
            vault_id=request.vault_id, role=request.role, name=request.name, csr_pem=request.csr_pem,
            secret=request.secret, force=request.force, version=request.version,
            encryption=request.encryption, key_fingerprint=request.key_fingerprint,
            provider=request.provider,
        )
        return registration_pb2.RegisterResponse(
            certificate_pem=done.certificate_pem, service_ca_pem=self.svc.service_ca.cert_pem,
            identity=done.identity, vault_name=done.vault_name,
        )


class SiteApi(site_pb2_grpc.SiteServicer):
    def __init__(self, svc: CloudService) -> None:
        self.svc = svc

    def Heartbeat(self, request: Any, context: Any) -> site_pb2.HeartbeatResponse:
        ident = current_identity()
        self.svc.registrar.heartbeat(ident, request.version)
        return site_pb2.HeartbeatResponse(server_time=self.svc.clock.now(), identity=ident.uri)
