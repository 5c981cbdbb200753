"""The replica disks: the latest point of a replica, applied to VHDX files a failover can start
the VM from without copying.

    REPLICA_DIR/<vm_id>/disks/disk<N>.vhdx
    REPLICA_DIR/<vm_id>/applied.json     {"point_id": P, "applying": Q}

Ordering: ``applying`` names the point being applied (durable) *before* the first block is
written; the disks are fsynced; only then ``point_id`` becomes that point and ``applying``
"". A file with ``applying`` set therefore means a crash (or a failure) in the middle of an
apply: the disks hold a mix of two points and are redone from the store in full (new files,
every non-zero block of the point). An incremental apply (only the blocks a commit changed)
is used only when the disks hold exactly the commit's base point.

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

from asrerrors import DiskImageError
from chunkfmt import BLOCK_SIZE, ZERO_ID, decode_chunk, parse_header
from cloudsvc.vaultstore import DiskDelta, PointInfo, VaultStore
from diskimage.probe import open_disk
from durablefile import write_atomic

_WRITE_RUN = 64  # consecutive blocks written together (4 MiB)


@dataclass(frozen=True)
class Applied:
    point_id: str = ""
    applying: str = ""
    encrypted: bool = False


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
        return Applied(str(doc.get("point_id", "")), str(doc.get("applying", "")), bool(doc.get("encrypted", False)))

    def _set(self, st: Applied) -> None:
        write_atomic(self.state_path, json.dumps(st.__dict__).encode())

    def apply(self, store: VaultStore, point: PointInfo, deltas: list[DiskDelta] | None, base_point_id: str) -> str:
        """Bring the disks to ``point``; ``deltas`` (the commit's changed blocks) are used when
        the disks hold ``base_point_id``. Returns "incremental", "full" or "encrypted"."""
        st = self.state()
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

    def _full(self, store: VaultStore, point: PointInfo) -> str:
        os.makedirs(self.dir, exist_ok=True)
        for disk in point.disks:
            path = self.path(disk.disk_index)
            partial = path + ".partial"
            _create_vhdx(partial, disk.virtual_size)
            # a new image reads as zeros: only the point's non-zero blocks are written
            self._write_blocks(partial, store, ((b, c) for b, c in store.block_map(point.point_id, disk.disk_index)
                                                if c != ZERO_ID))
            os.replace(partial, path)
        return "full"

    def _write_blocks(self, path: str, store: VaultStore, blocks: Iterable[tuple[int, bytes]]) -> None:
        """Write the blocks (ascending block index -> chunk id) into the image at ``path``."""
        with open_disk(path) as img:
            for run in _runs(blocks):
                frames = store.fetch_blobs({c for _, c in run if c != ZERO_ID})
                start = run[0][0]
                buf = bytearray(len(run) * BLOCK_SIZE)
                for i, (block, cid) in enumerate(run):
                    assert block == start + i
                    if cid == ZERO_ID:
                        continue
                    frame = frames[cid]
                    if isinstance(frame, str):
                        raise DiskImageError(f"chunk {cid.hex()} of the replica {frame}")
                    if parse_header(frame).encrypted:
                        raise _Encrypted()
                    data = decode_chunk(frame, None)
                    buf[i * BLOCK_SIZE:i * BLOCK_SIZE + len(data)] = data
                end = min(len(buf), img.virtual_size - start * BLOCK_SIZE)
                img.write(start * BLOCK_SIZE, bytes(buf[:end]))
            img.flush()


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
