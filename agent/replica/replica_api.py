"""The recovery host's services on ``replica_listen``: the Replication subset a primary's cycle
uses (BeginCycle, Missing, PutChunks, CommitPoint, GetBlockMap) and FailbackData.Diff and
Sync (the primary fetching the blocks a failover VM changed: at failback, and while it
re-protects); translation between the wire and
``service.ReplicaService`` / ``failover.ReplicaFailovers`` only. Every other method is not
exposed here (the interceptor's table refuses it)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from agent.replica.channel import PAIRING_METADATA
from agent.replica.failover import ReplicaFailovers
from agent.replica.service import ReplicaService
from agent.replica.sync import SyncSource
from asrchannel.authz import AuthInterceptor, current_identity
from asrchannel.tls import server_credentials, server_options
from asrerrors import InvalidConfig, UsageError
from asrops.metrics import RpcMetrics
from asrpb import failover_pb2, failover_pb2_grpc, replication_pb2, replication_pb2_grpc
from cloudsvc.vaultstore import VaultStore
from cloudsvc.vaultstore.wire import begin_reply, block_map_parts, put_chunks, read_commit, split_ids

_CYCLE = ("BeginCycle", "Missing", "PutChunks", "CommitPoint", "GetBlockMap")
POLICY: dict[str, set[str]] = {f"/asr.v1.Replication/{m}": {"agent"} for m in _CYCLE}
POLICY["/asr.v1.FailbackData/Diff"] = {"agent"}
POLICY["/asr.v1.FailbackData/Sync"] = {"agent"}


def _pairing(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == PAIRING_METADATA:
            return str(value)
    return ""


class ReplicaApi(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, svc: ReplicaService) -> None:
        self.svc = svc

    def BeginCycle(self, request: Any, context: Any) -> replication_pb2.BeginCycleReply:
        token, base = self.svc.begin_cycle(current_identity(), request.vm_id, request.epoch, _pairing(context))
        return begin_reply(token, base)

    def Missing(self, request: Any, context: Any) -> replication_pb2.MissingReply:
        ids = split_ids(request.ids)
        return replication_pb2.MissingReply(ids=b"".join(self.svc.missing(current_identity(), request.session_id,
                                                                          _pairing(context), ids)))

    def PutChunks(self, request_iterator: Iterator[Any], context: Any) -> replication_pb2.PutChunksReply:
        ident, pairing = current_identity(), _pairing(context)

        def open_upload(session_id: str) -> tuple[VaultStore, str]:
            replica, store_session = self.svc.upload(ident, session_id, pairing)
            return replica.store, store_session

        return put_chunks(request_iterator, open_upload)

    def CommitPoint(self, request_iterator: Iterator[Any], context: Any) -> replication_pb2.PointAck:
        c = read_commit(request_iterator)
        point = self.svc.commit(current_identity(), c.head.session_id, _pairing(context), c.head.vm_id, c.disks,
                                c.head.base_point_id or None, c.head.kind, c.head.created_at, c.uploaded_bytes,
                                after=context.add_callback)
        return replication_pb2.PointAck(point_id=point.point_id, created_at=point.created_at)

    def GetBlockMap(self, request: Any, context: Any) -> Iterator[replication_pb2.BlockMapPart]:
        yield from block_map_parts(self.svc.block_map(current_identity(), request.vm_id, _pairing(context),
                                                      request.point_id, request.disk_index))


class FailbackApi(failover_pb2_grpc.FailbackDataServicer):
    """Diff for a primary failing back, Sync for one that re-protects: the session id is
    ``<vm_id>/<pairing id>`` (the command names it), admitted like a cycle (the pairing's
    source host only)."""

    def __init__(self, svc: ReplicaService, failovers: ReplicaFailovers, source: SyncSource) -> None:
        self.svc = svc
        self.failovers = failovers
        self.source = source

    def Diff(self, request_iterator: Iterator[Any], context: Any) -> Iterator[failover_pb2.BlockDiff]:
        ident = current_identity()
        first = next(request_iterator, None)
        if first is None:
            return
        vm_id, _, pairing_id = first.session_id.partition("/")
        self.svc.admit(ident, vm_id, pairing_id)
        yield from self.failovers.diff(vm_id, itertools.chain([first], request_iterator), ident.name)

    def Sync(self, request_iterator: Iterator[Any], context: Any) -> Iterator[failover_pb2.SyncReply]:
        ident = current_identity()
        first = next(request_iterator, None)
        if first is None:
            return
        if first.WhichOneof("step") != "start":
            raise UsageError("a sync begins with start")
        vm_id, _, pairing_id = first.start.session_id.partition("/")
        self.svc.admit(ident, vm_id, pairing_id)
        yield from self.source.sync(vm_id, first.start, request_iterator, ident.name)


def build_server(svc: ReplicaService, failovers: ReplicaFailovers, source: SyncSource, listen: str,
                 chain_pem: bytes, key_pem: bytes, vault_ca_pem: bytes,
                 metrics: RpcMetrics | None = None) -> tuple[grpc.Server, int]:
    """The replica server on ``listen`` with this host's certificate; client certificates must
    chain to the vault CA (the only trust anchor). Returns the server and its bound port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="replica"),
                         interceptors=[AuthInterceptor(POLICY, svc.check_caller, metrics)], options=server_options())
    replication_pb2_grpc.add_ReplicationServicer_to_server(ReplicaApi(svc), server)
    failover_pb2_grpc.add_FailbackDataServicer_to_server(FailbackApi(svc, failovers, source), server)
    try:
        port = server.add_secure_port(listen, server_credentials(chain_pem, key_pem, vault_ca_pem))
    except RuntimeError as exc:   # grpc raises when it cannot bind
        port, cause = 0, str(exc)
    else:
        cause = ""
    if port == 0:
        raise InvalidConfig(f"replica_listen {listen!r}: cannot listen there{': ' + cause if cause else ''}",
                            causes=("Another process uses the port, or the address is not one of this host's.",),
                            action="Correct replica_listen in the agent's configuration, or free the port.")
    return server, port
