"""The Replication service (agents: the data path) and the Points service (operator)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from asrchannel.authz import current_identity
from asrpb import replication_pb2, replication_pb2_grpc
from cloudsvc.service import CloudService
from cloudsvc.vaultstore.wire import begin_reply, block_map_parts, put_chunks, read_commit, split_ids

# Every operator-facing and agent-facing method of this module, by role (for server.POLICY).
POLICY: dict[str, set[str]] = {
    "/asr.v1.Replication/": {"agent"},
    "/asr.v1.Points/": {"operator"},
}
_EXPORT_MESSAGE = 2 * 1024 * 1024


class ReplicationApi(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, svc: CloudService) -> None:
        self.repl = svc.replication
        self.replicas = svc.replicas

    def BeginCycle(self, request: Any, context: Any) -> replication_pb2.BeginCycleReply:
        token, base = self.repl.begin_cycle(current_identity(), request.vm_id, request.epoch, request.final)
        return begin_reply(token, base)

    def Missing(self, request: Any, context: Any) -> replication_pb2.MissingReply:
        ids = split_ids(request.ids)
        return replication_pb2.MissingReply(ids=b"".join(self.repl.missing(current_identity(), request.session_id,
                                                                           ids)))

    def PutChunks(self, request_iterator: Iterator[Any], context: Any) -> replication_pb2.PutChunksReply:
        ident = current_identity()
        return put_chunks(request_iterator, lambda session_id: self.repl.upload(ident, session_id))

    def CommitPoint(self, request_iterator: Iterator[Any], context: Any) -> replication_pb2.PointAck:
        ident = current_identity()
        c = read_commit(request_iterator)
        point = self.repl.commit(ident, c.head.session_id, c.head.vm_id, c.disks, c.head.base_point_id or None,
                                 c.head.kind, c.head.created_at, c.uploaded_bytes, c.resync_disks)
        return replication_pb2.PointAck(point_id=point.point_id, created_at=point.created_at)

    def GetBlockMap(self, request: Any, context: Any) -> Iterator[replication_pb2.BlockMapPart]:
        yield from block_map_parts(self.repl.block_map(current_identity(), request.vm_id, request.point_id,
                                                       request.disk_index))

    def ReportProgress(self, request: Any, context: Any) -> replication_pb2.ProgressAck:
        self.repl.report(current_identity(), request.vm_id, request.epoch, request.initial_progress, request.error,
                         request.warning, request.warning_code)
        return replication_pb2.ProgressAck()

    def CheckEpoch(self, request: Any, context: Any) -> replication_pb2.EpochStatus:
        item = self.repl.check_epoch(current_identity(), request.vm_id, request.epoch)
        return replication_pb2.EpochStatus(epoch=item.epoch, state=item.state.value)

    def ReportReplica(self, request: Any, context: Any) -> replication_pb2.ReplicaAck:
        return replication_pb2.ReplicaAck(paired=self.replicas.report(current_identity(), request))

    def ReportReverse(self, request: Any, context: Any) -> replication_pb2.ReplicaAck:
        return replication_pb2.ReplicaAck(paired=self.replicas.report_reverse(current_identity(), request))


class PointsApi(replication_pb2_grpc.PointsServicer):
    def __init__(self, svc: CloudService) -> None:
        self.svc = svc
        self.repl = svc.replication

    def _vm(self, request: Any) -> tuple[str, str, str]:
        v = self.svc.vaults.get(request.vault)
        row = self.svc.inventory.find_vm(v.id, request.vm)
        return v.id, str(row["vm_id"]), str(row["name"])

    def ListPoints(self, request: Any, context: Any) -> replication_pb2.PointList:
        vault_id, vm_id, name = self._vm(request)
        out = replication_pb2.PointList(vm_id=vm_id)
        held = self.svc.replicas.held(vault_id, vm_id)
        if held is not None:   # site to site: on the recovery host, known from its reports
            out.points.extend(replication_pb2.RecoveryPoint(
                point_id=r.point_id, created_at=r.created_at, kind="app" if r.app_consistent else "crash",
                uploaded_bytes=r.stored_bytes, location=r.host) for r in held)
            return out
        for p, facts in self.repl.points(vault_id, vm_id, name):
            out.points.append(replication_pb2.RecoveryPoint(
                point_id=p.point_id, created_at=p.created_at, kind=p.kind,
                uploaded_bytes=facts["uploaded_bytes"], changed_blocks=facts["changed_blocks"],
                disks=[replication_pb2.PointDisk(disk_index=d.disk_index, virtual_size=d.virtual_size)
                       for d in p.disks], location=facts["storage"]))
        return out

    def VerifyPoint(self, request: Any, context: Any) -> replication_pb2.VerifyReport:
        vault_id, vm_id, name = self._vm(request)
        point, damage, packs = self.repl.verify(vault_id, vm_id, name, request.point_id)
        return replication_pb2.VerifyReport(
            point_id=point.point_id, ok=not damage, packs_checked=packs,
            damage=[replication_pb2.Damage(disk_index=d.disk_index, block_index=d.block_index,
                                           chunk_id=d.chunk_id.hex(), what=d.what) for d in damage])

    def ExportPoint(self, request: Any, context: grpc.ServicerContext) -> Iterator[replication_pb2.ExportPart]:
        vault_id, vm_id, name = self._vm(request)
        point, encrypted, frames = self.repl.read_point(vault_id, vm_id, name, request.point_id, request.disk_index)
        disk = point.disks[request.disk_index]
        part = replication_pb2.ExportPart(virtual_size=disk.virtual_size, point_id=point.point_id,
                                          encrypted=encrypted)
        size = 0
        ids: list[bytes] = []
        prev: bytes | None = None  # the frame sent last in this message
        try:
            for block, cid, frame in frames:
                if frame is None:
                    continue
                part.blocks.append(block)
                ids.append(cid)
                if frame is prev:
                    # a group frame's next member: sent once per message, the client reads
                    # the member it needs (by id) from the frame it kept
                    part.frames.append(b"")
                else:
                    part.frames.append(frame)
                    size += len(frame)
                    prev = frame
                size += len(cid)
                if size >= _EXPORT_MESSAGE:
                    part.ids = b"".join(ids)
                    yield part
                    part = replication_pb2.ExportPart()
                    size = 0
                    ids = []
                    prev = None  # every message starts with a whole frame
            part.ids = b"".join(ids)
            yield part
        finally:
            frames.close()  # type: ignore[attr-defined]  # releases the pin if the client went away

    def RunMaintenance(self, request: Any, context: Any) -> replication_pb2.MaintenanceReport:
        v = self.svc.vaults.get(request.vault)
        deleted, before, after = self.repl.maintain(v.id, gc=True)
        self.repl.watch_health(v.id)
        self.svc.events.trim(v.id)
        return replication_pb2.MaintenanceReport(points_deleted=deleted, bytes_before=before, bytes_after=after)

    def RebuildIndex(self, request: Any, context: Any) -> replication_pb2.RebuildIndexReport:
        v = self.svc.vaults.get(request.vault)
        packs, blobs, damaged = self.repl.rebuild_index(v.id, request.storage)
        return replication_pb2.RebuildIndexReport(packs=packs, blobs=blobs, damaged_packs=damaged)


def add_to_server(svc: CloudService, server: grpc.Server) -> list[str]:
    """Register both services; returns the service names (for reflection)."""
    replication_pb2_grpc.add_ReplicationServicer_to_server(ReplicationApi(svc), server)
    replication_pb2_grpc.add_PointsServicer_to_server(PointsApi(svc), server)
    return [replication_pb2.DESCRIPTOR.services_by_name[n].full_name for n in ("Replication", "Points")]
