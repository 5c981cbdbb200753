"""The recovery host's Replication service (the subset a primary's cycle uses: BeginCycle,
Missing, PutChunks, CommitPoint, GetBlockMap) on ``replica_listen``: translation between the
wire and ``service.ReplicaService`` only. Every other Replication method is not exposed here
(the interceptor's table refuses it)."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from agent.replica.service import ReplicaService
from asrchannel.authz import AuthInterceptor, current_identity
from asrchannel.tls import server_credentials, server_options
from asrerrors import InvalidConfig, UsageError
from asrops.metrics import RpcMetrics
from asrpb import replication_pb2, replication_pb2_grpc
from chunkfmt import ID_SIZE
from cloudsvc.vaultstore import BlockChanges, DiskDelta

PAIRING_METADATA = "asr-pairing-id"  # request metadata: the vault's pairing the caller ships for
_CYCLE = ("BeginCycle", "Missing", "PutChunks", "CommitPoint", "GetBlockMap")
POLICY: dict[str, set[str]] = {f"/asr.v1.Replication/{m}": {"agent"} for m in _CYCLE}
_MAP_BATCH = 4096


def _pairing(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == PAIRING_METADATA:
            return str(value)
    return ""


def _split_ids(raw: bytes) -> list[bytes]:
    if len(raw) % ID_SIZE:
        raise UsageError("chunk ids must be a whole number of 32-byte ids")
    return [raw[i:i + ID_SIZE] for i in range(0, len(raw), ID_SIZE)]


class ReplicaApi(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, svc: ReplicaService) -> None:
        self.svc = svc

    def BeginCycle(self, request: Any, context: Any) -> replication_pb2.BeginCycleReply:
        token, base = self.svc.begin_cycle(current_identity(), request.vm_id, request.epoch, _pairing(context))
        reply = replication_pb2.BeginCycleReply(session_id=token)
        if base is not None:
            reply.base_point_id = base.point_id
            reply.base_created_at = base.created_at
            reply.base_disks.extend(replication_pb2.PointDisk(disk_index=d.disk_index, virtual_size=d.virtual_size)
                                    for d in base.disks)
        return reply

    def Missing(self, request: Any, context: Any) -> replication_pb2.MissingReply:
        ids = _split_ids(request.ids)
        return replication_pb2.MissingReply(ids=b"".join(self.svc.missing(current_identity(), request.session_id,
                                                                          _pairing(context), ids)))

    def PutChunks(self, request_iterator: Iterator[Any], context: Any) -> replication_pb2.PutChunksReply:
        ident = current_identity()
        upload = None
        count = size = 0
        for batch in request_iterator:
            if upload is None:
                if not batch.session_id:
                    raise UsageError("the first chunk batch must name the upload session")
                upload = self.svc.upload(ident, batch.session_id, _pairing(context))
            if len(batch.ids) != len(batch.frames):
                raise UsageError("a chunk batch needs one frame per id")
            items = list(zip(batch.ids, batch.frames, strict=True))
            upload[0].store.put_chunks(upload[1], items)
            count += len(items)
            size += sum(len(f) for _, f in items)
        if upload is not None:
            upload[0].store.flush()  # durable and indexed before we answer
        return replication_pb2.PutChunksReply(received=count, bytes=size)

    def CommitPoint(self, request_iterator: Iterator[Any], context: Any) -> replication_pb2.PointAck:
        head: Any = None
        indexes: dict[int, array] = {}  # type: ignore[type-arg]
        ids: dict[int, bytearray] = {}
        uploaded = 0
        for part in request_iterator:
            if head is None:
                head = part
            if part.blocks or part.ids:
                if len(part.blocks) % 8 or len(part.ids) % ID_SIZE or len(part.blocks) // 8 != len(part.ids) // ID_SIZE:
                    raise UsageError("a commit part needs one 32-byte id per 8-byte block index")
                block_array = array("Q")
                block_array.frombytes(part.blocks)
                if sys.byteorder != "little":
                    block_array.byteswap()
                indexes.setdefault(part.disk_index, array("Q")).extend(block_array)
                ids.setdefault(part.disk_index, bytearray()).extend(part.ids)
            if part.last:
                uploaded = part.uploaded_bytes
                break
        else:
            raise UsageError("the point commit ended before its last part (interrupted)")
        assert head is not None
        if head.kind not in ("crash", "app"):
            raise UsageError(f"point kind {head.kind!r} is not crash or app")
        disks = [DiskDelta(d.virtual_size, BlockChanges.from_parts(indexes.get(d.disk_index, array("Q")),
                                                                  bytes(ids.get(d.disk_index, b""))))
                 for d in sorted(head.disks, key=lambda d: d.disk_index)]
        point = self.svc.commit(current_identity(), head.session_id, _pairing(context), head.vm_id, disks,
                                head.base_point_id or None, head.kind, head.created_at, uploaded)
        return replication_pb2.PointAck(point_id=point.point_id, created_at=point.created_at)

    def GetBlockMap(self, request: Any, context: Any) -> Iterator[replication_pb2.BlockMapPart]:
        start = 0
        batch: list[bytes] = []
        for block, cid in self.svc.block_map(current_identity(), request.vm_id, _pairing(context),
                                             request.point_id, request.disk_index):
            if not batch:
                start = block
            batch.append(cid)
            if len(batch) >= _MAP_BATCH:
                yield replication_pb2.BlockMapPart(start_block=start, ids=b"".join(batch))
                batch = []
        if batch:
            yield replication_pb2.BlockMapPart(start_block=start, ids=b"".join(batch))


def build_server(svc: ReplicaService, listen: str, chain_pem: bytes, key_pem: bytes, vault_ca_pem: bytes,
                 metrics: RpcMetrics | None = None) -> tuple[grpc.Server, int]:
    """The replica server on ``listen`` with this host's certificate; client certificates must
    chain to the vault CA (the only trust anchor). Returns the server and its bound port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="replica"),
                         interceptors=[AuthInterceptor(POLICY, svc.check_caller, metrics)], options=server_options())
    replication_pb2_grpc.add_ReplicationServicer_to_server(ReplicaApi(svc), server)
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
