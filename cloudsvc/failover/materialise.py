"""Materialisation: one disk of a recovery point written as a fixed VHD (the format Azure runs).

Contract:

* Streaming. Blocks are read from the vault store in windows of :data:`WINDOW` blocks,
  decoded (decrypted, decompressed, checked against their chunk id) by a small pool of
  threads and written with ``pwrite`` at their offsets; at most :data:`IN_FLIGHT` windows are
  held at once, so memory is independent of the disk's size.
* Sparse. The data area of a new fixed VHD is a hole; zero blocks are never written.
* Never half made under the final name. A disk is written to ``NAME.partial``, fsynced, and
  only then renamed to ``NAME`` (and the directory fsynced). A crash leaves at most a
  ``.partial`` file, which the next attempt deletes and starts over.
* The customer-managed key is checked before any file is created (:func:`check_key`): a wrong
  or missing key is refused with :class:`EncryptionKeyError` and nothing is materialised.
  The key is used in memory only and never stored.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from asrerrors import DataCorrupt, EncryptionKeyError
from chunkfmt import BLOCK_SIZE, ZERO_ID, CustomerKey, decode_chunk, parse_header
from cloudsvc.vaultstore import PointInfo, VaultStore
from diskimage import create_fixed_vhd

WINDOW = 64  # blocks per window: 4 MiB of plaintext
IN_FLIGHT = 4  # windows decoded concurrently (bounds memory to ~IN_FLIGHT * 2 * 4 MiB)
THREADS = 2
SECTOR = 512

Progress = Callable[[int, int], None]  # (blocks done, blocks total)


@dataclass(frozen=True)
class Keys:
    """How to decode one VM's frames: the AEAD key (None when the VM is not encrypted) and the
    id key its chunk ids were made with."""

    aead_key: bytes | None
    id_key: bytes


@dataclass(frozen=True)
class DiskResult:
    disk_index: int
    path: str
    virtual_size: int
    blocks_written: int
    bytes_written: int


def vhd_size(virtual_size: int) -> int:
    """A fixed VHD holds a whole number of sectors: round up (the tail reads as zeros)."""
    return -(-virtual_size // SECTOR) * SECTOR


def _first_frame(store: VaultStore, point_id: str, disk_index: int) -> tuple[bytes, bytes] | None:
    for _, cid in store.block_map(point_id, disk_index):
        if cid != ZERO_ID:
            got = store.fetch_blobs({cid})[cid]
            if isinstance(got, str):
                raise DataCorrupt(f"point {point_id} disk {disk_index}: chunk {cid.hex()} {got}")
            return cid, got
    return None


def check_key(store: VaultStore, point: PointInfo, vault_id_key: bytes, key: CustomerKey | None) -> Keys:
    """Decide how to decode the point's frames, refusing a missing or wrong key up front.

    One real chunk of every disk is decoded and checked against its id, so a key that merely
    passes the frames' 32-bit key check but is not the VM's key is refused too.
    """
    encrypted: bool | None = None
    samples = []
    for disk in point.disks:
        first = _first_frame(store, point.point_id, disk.disk_index)
        if first is not None:
            samples.append(first)
            encrypted = parse_header(first[1]).encrypted
    if not encrypted:
        # An unencrypted VM (or one whose disks are all zero): a supplied key is not needed.
        keys = Keys(None, vault_id_key)
    elif key is None:
        raise EncryptionKeyError(
            f"the VM of point {point.point_id} is encrypted with a customer-managed key and no key was given",
            action="Pass the key file with --encryption-key-file (the cloud never stores the key).",
        )
    else:
        keys = Keys(key.aead_key, key.id_key)
    for cid, frame in samples:
        try:
            decode_chunk(frame, keys.aead_key, expected_id=cid, id_key=keys.id_key)
        except (EncryptionKeyError, DataCorrupt) as exc:
            if keys.aead_key is None:
                raise
            raise EncryptionKeyError(
                f"the customer-managed key given (fingerprint {key.fingerprint if key else '?'}) is not the key "
                f"this VM was encrypted with: {exc}",
                causes=("The key file belongs to another provider or was regenerated.",),
                action="Pass the key file of the provider that protects this VM with --encryption-key-file.",
            ) from exc
    return keys


def materialise_disk(
    store: VaultStore, point: PointInfo, disk_index: int, path: str, keys: Keys,
    progress: Progress | None = None, cancelled: threading.Event | None = None,
) -> DiskResult:
    """Write disk ``disk_index`` of ``point`` as a fixed VHD at ``path`` (see module doc)."""
    disk = point.disks[disk_index]
    size = disk.virtual_size
    partial = path + ".partial"
    for stale in (partial, path):
        if os.path.exists(stale):
            os.unlink(stale)  # a previous attempt: start over, materialising is idempotent
    create_fixed_vhd(partial, vhd_size(size))
    total = -(-size // BLOCK_SIZE)
    fd = os.open(partial, os.O_RDWR)
    written = [0, 0]  # blocks, bytes
    lock = threading.Lock()
    done = [0]

    def decode_window(window: list[tuple[int, bytes]]) -> None:
        fetched = store.fetch_blobs({c for _, c in window})
        for block, cid in window:
            got = fetched[cid]
            if isinstance(got, str):
                raise DataCorrupt(f"point {point.point_id} disk {disk_index} block {block}: chunk {cid.hex()} {got}")
            data = decode_chunk(got, keys.aead_key, expected_id=cid, id_key=keys.id_key)
            start = block * BLOCK_SIZE
            view = memoryview(data)[: size - start]
            off = start
            while view:
                n = os.pwrite(fd, view, off)
                view = view[n:]
                off += n
            with lock:
                written[0] += 1
                written[1] += min(len(data), size - start)

    try:
        with ThreadPoolExecutor(THREADS, thread_name_prefix="materialise") as pool:
            pending: list[tuple[Future[None], int]] = []

            def drain(limit: int) -> None:
                while len(pending) > limit:
                    fut, last = pending.pop(0)
                    fut.result()
                    done[0] = last
                    if progress is not None:
                        progress(last, total)
                    if cancelled is not None and cancelled.is_set():
                        raise DataCorrupt("materialisation was cancelled")

            for window in _windows(store, point.point_id, disk_index):
                pending.append((pool.submit(decode_window, window), window[-1][0] + 1))
                drain(IN_FLIGHT)
            drain(0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(partial)
        raise
    os.close(fd)
    os.replace(partial, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename is durable before the disk is reported as made
    finally:
        os.close(dfd)
    if progress is not None:
        progress(total, total)
    return DiskResult(disk_index, os.path.abspath(path), size, written[0], written[1])


def _windows(store: VaultStore, point_id: str, disk_index: int) -> Iterator[list[tuple[int, bytes]]]:
    window: list[tuple[int, bytes]] = []
    for block, cid in store.block_map(point_id, disk_index):
        if cid == ZERO_ID:
            continue  # left sparse
        window.append((block, cid))
        if len(window) >= WINDOW:
            yield window
            window = []
    if window:
        yield window
