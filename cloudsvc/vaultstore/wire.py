"""The Replication protocol in vault-store terms, for both of its servers (the vault's
``cloudsvc/replication_api.py`` and a recovery host's ``agent/replica/replica_api.py``):
a cycle's base point as a ``BeginCycleReply``, packed chunk ids split, a ``PutChunks`` stream
(single frames with their ids, and group frames that name their members) stored and made
durable, a ``CommitPoint`` stream read into one :class:`DiskDelta` per disk (kept packed,
8 + 32 bytes per block, never as a dict: see :class:`BlockChanges`), and a point's block map
written as ``BlockMapPart`` batches. What each server checks (who may ship which VM) stays in
its own service.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from asrerrors import UsageError
from asrpb import replication_pb2
from chunkfmt import ID_SIZE
from cloudsvc.vaultstore.records import BlockChanges, DiskDelta, PointInfo
from cloudsvc.vaultstore.store import VaultStore

MAP_BATCH = 4096      # block map entries per BlockMapPart: 4096 × 32 bytes = 128 KiB of ids


def begin_reply(session_id: str, base: PointInfo | None) -> replication_pb2.BeginCycleReply:
    reply = replication_pb2.BeginCycleReply(session_id=session_id)
    if base is not None:
        reply.base_point_id = base.point_id
        reply.base_created_at = base.created_at
        reply.base_disks.extend(replication_pb2.PointDisk(disk_index=d.disk_index, virtual_size=d.virtual_size)
                                for d in base.disks)
    return reply


def split_ids(raw: bytes) -> list[bytes]:
    if len(raw) % ID_SIZE:
        raise UsageError("chunk ids must be a whole number of 32-byte ids")
    return [raw[i:i + ID_SIZE] for i in range(0, len(raw), ID_SIZE)]


def put_chunks(batches: Iterable[Any], open_upload: Callable[[str], tuple[VaultStore, str]]
               ) -> replication_pb2.PutChunksReply:
    """Store a ``PutChunks`` stream into the store and session ``open_upload(session_id)``
    returns (it checks the caller); durable and indexed before the reply, so the agent never
    sends these chunks again."""
    upload: tuple[VaultStore, str] | None = None
    count = size = 0
    for batch in batches:
        if upload is None:
            if not batch.session_id:
                raise UsageError("the first chunk batch must name the upload session")
            upload = open_upload(batch.session_id)
        if len(batch.ids) != len(batch.frames):
            raise UsageError("a chunk batch needs one frame per id")
        # each access to a repeated bytes field copies it out of the message: once only
        items = list(zip(batch.ids, batch.frames, strict=True))
        groups = list(batch.groups)   # group frames: their member ids are in their tables
        count += upload[0].put_chunks(upload[1], items, groups)
        size += sum(len(f) for _, f in items) + sum(len(g) for g in groups)
    if upload is not None:
        upload[0].flush()
    return replication_pb2.PutChunksReply(received=count, bytes=size)


@dataclass
class Commit:
    head: Any                   # the first CommitPart: session, VM, base point, kind, time, disks
    disks: list[DiskDelta]      # by disk index
    uploaded_bytes: int
    resync_disks: int


def read_commit(parts: Iterable[Any]) -> Commit:
    """A whole ``CommitPoint`` stream; a stream that ends before its last part (the client
    went away) or names an unknown kind is refused before anything is committed."""
    head: Any = None
    indexes: dict[int, array] = {}  # type: ignore[type-arg]
    ids: dict[int, bytearray] = {}
    for part in parts:
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
            break
    else:
        raise UsageError("the point commit ended before its last part (interrupted)")
    assert head is not None
    if head.kind not in ("crash", "app"):
        raise UsageError(f"point kind {head.kind!r} is not crash or app")
    disks = [DiskDelta(d.virtual_size, BlockChanges.from_parts(indexes.get(d.disk_index, array("Q")),
                                                              bytes(ids.get(d.disk_index, b""))))
             for d in sorted(head.disks, key=lambda d: d.disk_index)]
    return Commit(head, disks, part.uploaded_bytes, part.resync_disks)


def block_map_parts(entries: Iterable[tuple[int, bytes]]) -> Iterator[replication_pb2.BlockMapPart]:
    """A point's ``(block, chunk id)`` entries, every block in order (as the store yields them),
    in batches of :data:`MAP_BATCH` named by their first block."""
    start = 0
    batch: list[bytes] = []
    for block, cid in entries:
        if not batch:
            start = block
        batch.append(cid)
        if len(batch) >= MAP_BATCH:
            yield replication_pb2.BlockMapPart(start_block=start, ids=b"".join(batch))
            batch = []
    if batch:
        yield replication_pb2.BlockMapPart(start_block=start, ids=b"".join(batch))
