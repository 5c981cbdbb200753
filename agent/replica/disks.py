"""The replica disks: the latest point of a replica, applied to VHDX files a failover can start
the VM from without copying.

    REPLICA_DIR/<vm_id>/disks/disk<N>.vhdx
    REPLICA_DIR/<vm_id>/applied.json     {"point_id": P, "applying": Q, "encrypted": E, "held_by": VM}

Ordering: ``applying`` names the point being applied (durable) *before* the first block is
written; the disks are fsynced (and a full apply's renames made durable); only then
``point_id`` becomes that point and ``applying`` "". A file with ``applying`` set therefore
means a crash (or a failure) in the middle of an apply: the disks hold a mix of two points
and are redone from the store in full (new files, every non-zero block of the point). An
incremental apply (only the blocks a commit changed) is used only when the disks hold exactly
the commit's base point.

Because the marker already makes an interrupted apply a full redo into new files, nothing in
an apply needs to be durable before its end: the images are opened without the VHDX writer's
per-block fsync (one fsync per newly allocated VHDX block made a first copy of 1 GiB spend
~0.9 s in fsync alone), and a full apply fills the new image with whole VHDX blocks appended
by direct I/O (``diskimage.vhdx.AppendBlocks``: the page cache was the real limit, and
writing each new 8 MiB block as zeros first and then in two 4 MiB halves wrote 1.5× the
data). Measured in docs/benchmarks.md, "Site to site (issue 11)".

A failover that runs the VM on the disks themselves (``agent.replica.failover``) sets
``held_by`` to that VM's name before the VM exists: no apply touches held disks. Letting them
go (the failover VM deleted: cancel, failback commit) clears ``point_id`` too, because the VM
wrote to them: the next apply redoes them from the store in full.

Encrypted points (the policy encrypts with the customer's key, which a recovery host does not
hold) are kept in the store only: ``applied.json`` then says ``"encrypted": true`` and the
disks are left as they were; failover has to decrypt from the store.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from asrerrors import DiskImageError, EncryptionKeyError
from chunkfmt import BLOCK_SIZE, ZERO_ID, decode_chunk, parse_header
from cloudsvc.vaultstore import DiskDelta, PointInfo, VaultStore
from diskimage.image import zero_fill
from diskimage.probe import open_disk
from diskimage.vhdx import AppendBlocks, VhdxImage
from durablefile import fsync_dir, write_atomic

_WRITE_RUN = 64  # consecutive blocks written together (4 MiB)


@dataclass(frozen=True)
class Applied:
    point_id: str = ""
    applying: str = ""
    encrypted: bool = False
    held_by: str = ""        # a failover VM runs on the disks: nothing is applied to them


class ReplicaDisks:
    def __init__(self, vm_dir: str) -> None:
        self.dir = os.path.join(vm_dir, "disks")
        self.state_path = os.path.join(vm_dir, "applied.json")

    def path(self, disk_index: int) -> str:
        return os.path.join(self.dir, f"disk{disk_index}.vhdx")

    def state(self) -> Applied:
        try:
            with open(self.state_path) as f:
                doc = json.load(f)
        except (FileNotFoundError, ValueError):
            return Applied()
        return Applied(str(doc.get("point_id", "")), str(doc.get("applying", "")), bool(doc.get("encrypted", False)),
                       str(doc.get("held_by", "")))

    def _set(self, st: Applied) -> None:
        write_atomic(self.state_path, json.dumps(st.__dict__).encode())

    def hold(self, vm_name: str) -> Applied:
        """A failover VM is about to run on the disks (durable before it exists)."""
        st = self.state()
        held = Applied(st.point_id, st.applying, st.encrypted, vm_name)
        self._set(held)
        return held

    def restore(self, store: VaultStore, point: PointInfo, written: list[list[int]]) -> None:
        """The failover VM that ran on the disks (held at ``point``) is gone, and tracking says
        which blocks it wrote: write ``point``'s content back into those blocks only, so the
        disks hold ``point`` again and the next apply is incremental. Same marker protocol as an
        apply: ``applying`` is set first, so a crash in the middle means a full redo."""
        self._set(Applied("", point.point_id))
        for disk, blocks in zip(point.disks, written, strict=True):
            wanted = set(blocks)
            if wanted:
                self._write_blocks(self.path(disk.disk_index), store,
                                   [(b, c) for b, c in store.block_map(point.point_id, disk.disk_index) if b in wanted])
        self._set(Applied(point.point_id, ""))

    def let_go(self) -> None:
        """The failover VM that ran on the disks is gone: they hold no point any more (it
        wrote to them), so the next apply redoes them in full."""
        self._set(Applied())

    def apply(self, store: VaultStore, point: PointInfo, deltas: list[DiskDelta] | None, base_point_id: str) -> str:
        """Bring the disks to ``point``; ``deltas`` (the commit's changed blocks) are used when
        the disks hold ``base_point_id``. Returns "incremental", "full" or "encrypted"."""
        st = self.state()
        if st.held_by:
            return "held"
        if st.point_id == point.point_id and not st.applying:
            return "current"
        incremental = (deltas is not None and not st.applying and not st.encrypted and st.point_id != ""
                       and st.point_id == base_point_id
                       and all(os.path.exists(self.path(d.disk_index)) for d in point.disks))
        self._set(Applied(st.point_id, point.point_id))
        if incremental and any(_size(self.path(d.disk_index)) != d.virtual_size for d in point.disks):
            incremental = False   # a disk was resized: rewrite it whole
        try:
            if incremental:
                assert deltas is not None
                for disk, delta in zip(point.disks, deltas, strict=True):
                    self._write_blocks(self.path(disk.disk_index), store, _sorted_changes(delta))
                how = "incremental"
            else:
                how = self._full(store, point)
        except _Encrypted:
            self._set(Applied(st.point_id, "", True))
            return "encrypted"
        self._set(Applied(point.point_id, ""))
        return how

    def write_copy(self, store: VaultStore, point: PointInfo) -> None:
        """Write ``point`` as new disks in this directory (a failover's copy of a point; the
        replica's own disks are not touched)."""
        try:
            self._full(store, point)
        except _Encrypted as exc:
            raise EncryptionKeyError(
                f"point {point.point_id} is encrypted with the customer-managed key, which a recovery host does not "
                "hold: it cannot be started here",
                action="Protect VMs replicated site to site without --encrypt (this release cannot fail over "
                       "encrypted replicas).") from exc

    def _full(self, store: VaultStore, point: PointInfo) -> str:
        os.makedirs(self.dir, exist_ok=True)
        for disk in point.disks:
            path = self.path(disk.disk_index)
            partial = path + ".partial"
            _create_vhdx(partial, disk.virtual_size)
            # a new image reads as zeros: only the point's non-zero blocks are written
            self._fill_new(partial, store, ((b, c) for b, c in store.block_map(point.point_id, disk.disk_index)
                                            if c != ZERO_ID))
            os.replace(partial, path)
        # the renames durable before applied.json (another directory) says the disks hold the point
        fsync_dir(self.dir)
        return "full"

    def _fill_new(self, path: str, store: VaultStore, blocks: Iterable[tuple[int, bytes]]) -> None:
        """Write the non-zero blocks (ascending block index -> chunk id) into the new, empty
        image at ``path``, one whole VHDX block at a time."""
        with VhdxImage(path) as img:
            out = AppendBlocks(img)
            try:
                per = out.block_size // BLOCK_SIZE
                for group in _groups(blocks, per):
                    frames = store.fetch_blobs({c for _, c in group})
                    first = group[0][0] // per * per
                    done = 0   # the buffer is reused: zero only what this block's data leaves out
                    for block, cid in group:
                        data = _decode(frames, cid)
                        at = (block - first) * BLOCK_SIZE
                        if at > done:
                            zero_fill(out.buffer[done:at])
                        out.buffer[at:at + len(data)] = data
                        done = at + len(data)
                    if done < out.block_size:
                        zero_fill(out.buffer[done:])
                    out.append(first // per)
                out.finish()
            finally:
                out.close()

    def _write_blocks(self, path: str, store: VaultStore, blocks: Iterable[tuple[int, bytes]]) -> None:
        """Write the blocks (ascending block index -> chunk id) into the image at ``path``."""
        with VhdxImage(path, sync_allocations=False) as img:
            for run in _runs(blocks):
                frames = store.fetch_blobs({c for _, c in run if c != ZERO_ID})
                start = run[0][0]
                buf = bytearray(len(run) * BLOCK_SIZE)
                for i, (block, cid) in enumerate(run):
                    assert block == start + i
                    if cid == ZERO_ID:
                        continue
                    data = _decode(frames, cid)
                    buf[i * BLOCK_SIZE:i * BLOCK_SIZE + len(data)] = data
                end = min(len(buf), img.virtual_size - start * BLOCK_SIZE)
                img.write(start * BLOCK_SIZE, bytes(buf[:end]))
            img.flush()


def _decode(frames: dict[bytes, bytes | str], cid: bytes) -> bytes:
    frame = frames[cid]
    if isinstance(frame, str):
        raise DiskImageError(f"chunk {cid.hex()} of the replica {frame}")
    if parse_header(frame).encrypted:
        raise _Encrypted()
    return decode_chunk(frame, None, chunk=cid)  # cid: the member, when a group frame


def _groups(blocks: Iterable[tuple[int, bytes]], per: int) -> Iterator[list[tuple[int, bytes]]]:
    """The blocks (ascending) grouped by the VHDX block (``per`` of ours) they fall in."""
    group: list[tuple[int, bytes]] = []
    for block, cid in blocks:
        if group and block // per != group[0][0] // per:
            yield group
            group = []
        group.append((block, cid))
    if group:
        yield group


class _Encrypted(Exception):
    """A frame is encrypted with the customer's key: the replica cannot be applied here."""


def _sorted_changes(delta: DiskDelta) -> list[tuple[int, bytes]]:
    return sorted((b, delta.changes[b]) for b in delta.changes)


def _runs(blocks: Iterable[tuple[int, bytes]]) -> Iterator[list[tuple[int, bytes]]]:
    """Consecutive blocks in runs of at most ``_WRITE_RUN`` (one fetch and one write each)."""
    run: list[tuple[int, bytes]] = []
    for block, cid in blocks:
        if run and (block != run[-1][0] + 1 or len(run) >= _WRITE_RUN):
            yield run
            run = []
        run.append((block, cid))
    if run:
        yield run


def _size(path: str) -> int:
    with open_disk(path, readonly=True) as img:
        return img.virtual_size


def _create_vhdx(path: str, size: int) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    res = subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic", path, str(size)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise DiskImageError(f"cannot create replica disk {path}: {res.stderr.strip() or res.stdout.strip()}",
                             action="Check that qemu-img is installed and the replica directory is writable.")
