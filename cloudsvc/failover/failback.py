"""Failback's data path on the cloud side: compare the agent's block hashes with the recovered
VM's disk and return only the blocks that differ.

The hash is unkeyed BLAKE3 of each 64 KiB block's plaintext (the last block may be short):
the recovered disk is plaintext in the vault, and the blocks travel inside the agent's mTLS
channel. A session (made by the failback job, named in the Failback command) binds one agent
host to one recovered VM; its counters record what was shipped.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator

import blake3

from asrclock import Clock
from asrerrors import NotFound, PermissionDenied, UsageError
from asrpb import failover_pb2
from certs.identity import Identity
from chunkfmt import BLOCK_SIZE
from metastore.database import Conn, Database


def block_hash(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def _pread(fd: int, offset: int, length: int) -> bytes:
    return os.pread(fd, length, offset)


def diff_reply(req: failover_pb2.BlockHashes, size: int, read: Callable[[int, int], bytes]) -> failover_pb2.BlockDiff:
    """The blocks of one batch whose content differs from the hashes the agent sent: ``read``
    (offset, length) reads the recovered disk of ``size`` bytes. Used by the cloud (a VM
    recovered into the vault) and by a recovery host (site to site, ``agent.replica``)."""
    if req.virtual_size != size:
        raise UsageError(f"disk {req.disk_index}: the on-premises disk has {req.virtual_size} bytes, "
                         f"the recovered disk {size}", action="Fail back onto a disk of the size that was protected.")
    out = failover_pb2.BlockDiff(disk_index=req.disk_index, first_block=req.first_block, compared=len(req.hashes))
    for k, h in enumerate(req.hashes):
        block = req.first_block + k
        start = block * BLOCK_SIZE
        if start >= size:
            raise UsageError(f"disk {req.disk_index}: block {block} is past the end of the disk")
        data = read(start, min(BLOCK_SIZE, size - start))
        if block_hash(data) != h:
            out.blocks.append(failover_pb2.DiffBlock(index=block, data=data))
    return out


class FailbackServer:
    """The only writer of ``failback_sessions``."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def open(self, conn: Conn, session: str, vault_id: str, vm_id: str, recovered_id: str,
             host: str) -> None:
        """A session binding ``host``'s agent to one recovered VM (the failback job's transaction)."""
        conn.execute("INSERT INTO failback_sessions(id, vault_id, vm_id, recovered_id, host, created_at)"
                     " VALUES (?,?,?,?,?,?)", (session, vault_id, vm_id, recovered_id, host, self.clock.now()))

    def _session(self, ident: Identity, session_id: str) -> list[dict[str, object]]:
        s = self.db.one("SELECT * FROM failback_sessions WHERE id=? AND vault_id=?", (session_id, ident.vault_id))
        if s is None:
            raise NotFound(f"failback session {session_id} does not exist")
        if s["host"] != ident.name:
            raise PermissionDenied(f"failback session {session_id} belongs to host {s['host']}, not {ident.name}")
        rvm = self.db.one("SELECT * FROM recovered_vms WHERE id=?", (s["recovered_id"],))
        if rvm is None:
            raise NotFound(f"the recovered VM of failback session {session_id} no longer exists")
        return list(json.loads(rvm["disks"]))

    def diff(self, ident: Identity, requests: Iterable[failover_pb2.BlockHashes]) -> Iterator[failover_pb2.BlockDiff]:
        disks: list[dict[str, object]] | None = None
        session = ""
        fds: dict[int, int] = {}
        compared = sent = sent_bytes = 0
        try:
            for req in requests:
                if disks is None:
                    session = req.session_id
                    disks = self._session(ident, session)
                if not 0 <= req.disk_index < len(disks):
                    raise NotFound(f"the recovered VM has no disk {req.disk_index}")
                disk = disks[req.disk_index]
                size = int(disk["virtual_size"])  # type: ignore[call-overload]
                fd = fds.get(req.disk_index)
                if fd is None:
                    fd = fds[req.disk_index] = os.open(str(disk["path"]), os.O_RDONLY)
                out = diff_reply(req, size, functools.partial(_pread, fd))
                sent += len(out.blocks)
                sent_bytes += sum(len(b.data) for b in out.blocks)
                compared += len(req.hashes)
                yield out
        finally:
            for fd in fds.values():
                os.close(fd)
            if session:
                with self.db.write() as conn:
                    conn.execute("UPDATE failback_sessions SET blocks_compared=blocks_compared+?,"
                                 " blocks_sent=blocks_sent+?, bytes_sent=bytes_sent+? WHERE id=?",
                                 (compared, sent, sent_bytes, session))
