"""The agent's Failback command: make the on-premises disks equal the recovered VM's disks.

For each disk the agent streams the BLAKE3 hash of every 64 KiB block to the cloud
(``FailbackData.Diff``) — or, for a VM protected site to site, to the recovery host that ran
it (``Failback.replica_source``: the same service on its ``replica_listen``) — and writes
back only the blocks returned, i.e. those that differ. Writes go the way guest writes go
(``LocalHypervisor.write``): under the VM lock, copy-on-write for an open snapshot, the block
marked dirty before the data is written. So forward replication resumes from a consistent
base without a full copy: the next cycle ships exactly the blocks failback changed (and where
tracking was lost, the agent's hash resync ships only what differs from the latest point).
Raw, VHD and VHDX disks are written in place (``diskimage``). Idempotent: a second run finds
nothing that differs.

Fencing: a failed-over VM is fenced on this host; failback writes its disks anyway (not
through the guest path's power check), and only once every disk was written does it grant
this host the command's epoch and clear the fence (``agent.fencing.grant``), then start the
VM. A failback that fails leaves the VM fenced.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import blake3
import grpc

from agent import fencing
from agent.hypervisor import tracking
from agent.hypervisor.snapshot import preserve_before_write
from agent.hypervisor.store import VmPaths, vm_lock
from agent.replica.channel import ReplicaChannels
from agent.runtime import AgentRuntime
from asrchannel.status import from_rpc_error
from asrerrors import NotFound
from asrpb import control_pb2, failover_pb2, failover_pb2_grpc
from chunkfmt import BLOCK_SIZE
from diskimage import DiskImage, open_disk
from vmspec import DiskSpec

log = logging.getLogger(__name__)

BATCH = 32  # blocks per request: a reply carries at most 2 MiB


def hash_requests(session: str, disk: int, image: DiskImage) -> Iterator[failover_pb2.BlockHashes]:
    size = image.virtual_size
    nblocks = -(-size // BLOCK_SIZE)
    for first in range(0, nblocks, BATCH):
        hashes = []
        for b in range(first, min(first + BATCH, nblocks)):
            start = b * BLOCK_SIZE
            # unkeyed BLAKE3 of the block, as FailbackData.Diff defines it
            hashes.append(blake3.blake3(image.read(start, min(BLOCK_SIZE, size - start))).digest())
        yield failover_pb2.BlockHashes(session_id=session, disk_index=disk, first_block=first, hashes=hashes,
                                       virtual_size=size)


def failback(rt: AgentRuntime, cmd: control_pb2.Command) -> str:
    body = cmd.failback
    name = next((vm.name for vm in rt.hv.list() if vm.vm_id == body.vm_id), body.vm_name)
    vm = rt.hv.get(name)
    if vm.power_state == "Running":
        vm = rt.hv.stop(name)
    paths = VmPaths(rt.hv.vm_dir, name)
    source = body.replica_source
    channels = None
    if source.address:
        # site to site: the blocks come from the recovery host that ran the VM, over the
        # host-to-host channel (vault CA, the recovery host's reserved name, the pairing id)
        channels = ReplicaChannels(rt.ident, rt.config.proxy)
        stub = failover_pb2_grpc.FailbackDataStub(channels.channel(source.recovery_host, source.address,
                                                                   source.pairing_id))
        peer = f"the recovery host {source.recovery_host} (failback)"
    else:
        stub = failover_pb2_grpc.FailbackDataStub(rt.link.channel)
        peer = "the cloud service (failback)"
    last = None
    try:
        if body.incremental and rt.reverse is not None:
            # re-protected: this host's disks follow the failover VM's; fetch the last delta
            last = rt.reverse.final(body.vm_id)
        if last is not None:
            compared, received, received_bytes = last.compared, last.blocks, last.bytes
        else:
            compared, received, received_bytes = _fetch(stub, body.session_id, vm.disks, paths, peer)
    finally:
        if channels is not None:
            channels.close()
    # the disks now equal the recovered VM's: this host is the active side from here on
    fencing.grant(rt, body.vm_id, name, cmd.epoch)
    if body.start_vm:
        rt.hv.start(name)
    how = "the last delta of re-protect: " if last is not None else ""
    out = (f"failback of {name}: {how}compared {compared} blocks, received {received} differing blocks "
           f"({received_bytes} bytes){'; VM started' if body.start_vm else ''}")
    log.info(out, extra={"fields": {"vm": name, "blocks_compared": compared, "blocks_received": received,
                                    "bytes_received": received_bytes}})
    return out


def _fetch(stub: failover_pb2_grpc.FailbackDataStub, session: str, disks: list[DiskSpec], paths: VmPaths,
           peer: str) -> tuple[int, int, int]:
    """Write the blocks that differ into each disk; returns (compared, received, bytes)."""
    compared = received = received_bytes = 0
    writer = DiskWriter(paths, disks)
    try:
        for index, spec in enumerate(disks):
            reader = open_disk(spec.path, readonly=True)
            try:
                for reply in stub.Diff(hash_requests(session, index, reader), timeout=6 * 3600):
                    compared += reply.compared
                    for blk in reply.blocks:
                        writer.write(index, blk.index, blk.data)
                        received += 1
                        received_bytes += len(blk.data)
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, peer) from exc
            finally:
                reader.close()
        writer.flush()
    finally:
        writer.close()
    return compared, received, received_bytes


class DiskWriter:
    """Blocks written into a VM's disks the way guest writes go (under the VM lock,
    copy-on-write for an open snapshot, the block marked dirty before its data), whatever the
    VM's power state or fence: failback and re-protect write a fenced VM's disks."""

    def __init__(self, paths: VmPaths, disks: list[DiskSpec]) -> None:
        self.paths = paths
        self.disks = disks
        self._open: dict[int, DiskImage] = {}

    def write(self, disk: int, block: int, data: bytes) -> None:
        if not 0 <= disk < len(self.disks):
            raise NotFound(f"VM has no disk {disk} (it has {len(self.disks)})")
        image = self._open.get(disk)
        if image is None:
            image = self._open[disk] = open_disk(self.disks[disk].path)
        blocks = range(block, block + 1)
        with vm_lock(self.paths):
            preserve_before_write(self.paths, disk, blocks, image)
            tracking.mark(self.paths.dirty_log(disk), blocks)
            image.write(block * BLOCK_SIZE, data)

    def flush(self) -> None:
        """Everything written is durable, and so are the dirty bits that describe it."""
        for disk, image in self._open.items():
            image.flush()
            tracking.sync(self.paths.dirty_log(disk))

    def close(self) -> None:
        for image in self._open.values():
            image.close()
        self._open.clear()


def register(rt: AgentRuntime) -> None:
    rt.handlers["failback"] = failback
