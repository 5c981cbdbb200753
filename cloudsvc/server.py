"""Building and running the gRPC server of the cloud service.

Two ports: the API port requires a client certificate (mTLS) chaining to the service CA;
the registration port authenticates only the server, and offers nothing but Registration
and health. gRPC core either requires client certificates or does not ask for them, so one
port cannot serve both kinds of caller.
"""

from __future__ import annotations

import logging
import os
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from asrchannel.authz import PUBLIC, AuthInterceptor
from asrchannel.tls import server_credentials, server_options
from asrpb import (
    operator_pb2,
    operator_pb2_grpc,
    registration_pb2,
    registration_pb2_grpc,
    site_pb2,
    site_pb2_grpc,
)
from cloudsvc import replication_api
from cloudsvc.billing_api import BillingApi
from cloudsvc.failover import api as failover_api
from cloudsvc.operator_api import OperatorApi
from cloudsvc.protection_api import ProtectionApi
from cloudsvc.service import CloudService
from cloudsvc.site_api import RegistrationApi, SiteApi

log = logging.getLogger(__name__)

POLICY: dict[str, set[str]] = {
    "/asr.v1.Registration/": {PUBLIC},
    "/grpc.health.v1.Health/": {PUBLIC},
    "/grpc.reflection.v1alpha.ServerReflection/": {PUBLIC},
    "/grpc.reflection.v1.ServerReflection/": {PUBLIC},
    "/asr.v1.Operator/": {"operator"},
    "/asr.v1.Protection/": {"operator"},
    "/asr.v1.Billing/": {"operator"},
    "/asr.v1.Site/": {"provider", "agent"},
    **replication_api.POLICY,
    **failover_api.POLICY,
    "/asr.v1.Site/SyncInventory": {"provider"},
    "/asr.v1.Site/Commands": {"provider"},
    "/asr.v1.Site/CompleteCommand": {"provider"},
    "/asr.v1.Site/RequestProtection": {"provider"},
    # named for the table's readers; the service prefixes above already allow the operator
    "/asr.v1.Operator/DeleteStorage": {"operator"},
    "/asr.v1.Operator/DeleteNetwork": {"operator"},
    "/asr.v1.Failover/DeleteRecoveredVm": {"operator"},
    "/asr.v1.Protection/CreateNetworkMapping": {"operator"},
    "/asr.v1.Protection/ListNetworkMappings": {"operator"},
    "/asr.v1.Protection/DeleteNetworkMapping": {"operator"},
    # site to site: recovery hosts report their replicas (who exactly: ``replicas``)
    "/asr.v1.Replication/ReportReplica": {"agent"},
    "/asr.v1.Replication/ReportReverse": {"agent"},   # re-protect: the primary host (who exactly: ``replicas``)
}


def build(svc: CloudService) -> tuple[grpc.Server, health.HealthServicer]:
    cfg = svc.config
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="rpc"),
        interceptors=[AuthInterceptor(POLICY, svc.registrar.check_caller, svc.metrics.rpc)],
        options=server_options(),
        maximum_concurrent_rpcs=cfg.workers * 4,
    )
    operator_pb2_grpc.add_OperatorServicer_to_server(OperatorApi(svc), server)
    operator_pb2_grpc.add_ProtectionServicer_to_server(ProtectionApi(svc), server)
    operator_pb2_grpc.add_BillingServicer_to_server(BillingApi(svc), server)
    registration_pb2_grpc.add_RegistrationServicer_to_server(RegistrationApi(svc), server)
    site_pb2_grpc.add_SiteServicer_to_server(SiteApi(svc), server)
    replication_names = replication_api.add_to_server(svc, server)
    failover_names = failover_api.add_to_server(svc, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [
        operator_pb2.DESCRIPTOR.services_by_name["Operator"].full_name,
        operator_pb2.DESCRIPTOR.services_by_name["Protection"].full_name,
        operator_pb2.DESCRIPTOR.services_by_name["Billing"].full_name,
        registration_pb2.DESCRIPTOR.services_by_name["Registration"].full_name,
        site_pb2.DESCRIPTOR.services_by_name["Site"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
        *replication_names,
        *failover_names,
    ]
    reflection.enable_server_reflection(names, server)
    pki = cfg.pki_dir
    with open(os.path.join(pki, "server.pem"), "rb") as f:
        cert = f.read()
    with open(os.path.join(pki, "server.key"), "rb") as f:
        key = f.read()
    ca = svc.service_ca.cert_pem
    server.add_secure_port(cfg.listen, server_credentials(cert, key, ca))
    server.add_secure_port(cfg.registration_listen, server_credentials(cert, key, None))
    served = [n for n in names if n != reflection.SERVICE_NAME] + [""]

    def report(available: bool) -> None:
        # every service answers through the metadata store: all are (not) serving together
        status = health_pb2.HealthCheckResponse.SERVING if available else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in served:
            health_servicer.set(name, status)

    # the readiness watch owns the status: SERVING while the metadata store answers
    svc.readiness.subscribe(report)
    return server, health_servicer
