"""Build a differencing VHDX for tests (qemu-img cannot create one).

A dynamic VHDX made by qemu with ``block_state_zero=off`` has NOT_PRESENT entries for every
block it never wrote; setting HasParent in its file parameters and adding a parent locator
turns it into a child whose unwritten blocks fall through to the parent.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

from dissect.hypervisor.disk.c_vhdx import (
    FILE_PARAMETERS_GUID,
    METADATA_REGION_GUID,
    PARENT_LOCATOR_GUID,
    VHDX_PARENT_LOCATOR_GUID,
)
from dissect.hypervisor.disk.vhdx import RegionTable

from diskimage.vhdx import FULLY_PRESENT, read_vhdx_meta

from . import qemu

ALIGNMENT = 64 * 1024


def _locator(entries: dict[str, str]) -> bytes:
    header_len = 20 + 12 * len(entries)
    table = b""
    blob = b""
    for key, value in entries.items():
        k = key.encode("utf-16-le")
        v = value.encode("utf-16-le")
        koff = header_len + len(blob)
        blob += k
        voff = header_len + len(blob)
        blob += v
        table += struct.pack("<IIHH", koff, voff, len(k), len(v))
    head = VHDX_PARENT_LOCATOR_GUID.bytes_le + struct.pack("<HH", 0, len(entries))
    return head + table + blob


def make_child(
    parent: Path, child: Path, size: int, child_writes: list[tuple[int, int, int]]
) -> bytes:
    """Create ``child`` (1 MiB blocks) over ``parent``, with ``child_writes`` inside it.

    Returns the child's own content as qemu read it before it became a differencing disk.
    """
    r = qemu.run(
        "qemu-img", "create", "-q", "-f", "vhdx",
        "-o", "subformat=dynamic,block_size=1M,block_state_zero=off", str(child), str(size),
    )
    assert r.returncode == 0, r.stderr
    if child_writes:
        qemu.qemu_write(child, "vhdx-dynamic", child_writes)
    own = qemu.to_raw(child, "vhdx", child.with_suffix(".own.raw"))
    with open(child, "r+b") as fh:
        regions = RegionTable(fh, 3 * ALIGNMENT)
        md = regions.get(METADATA_REGION_GUID)
        fh.seek(md.file_offset)
        head = fh.read(32)
        (count,) = struct.unpack_from("<H", head, 10)
        entries = []
        for i in range(count):
            fh.seek(md.file_offset + 32 + 32 * i)
            entries.append(fh.read(32))
        end = 0
        for e in entries:
            item = uuid.UUID(bytes_le=e[:16])
            off, length = struct.unpack_from("<II", e, 16)
            end = max(end, off + length)
            if item == FILE_PARAMETERS_GUID:
                fh.seek(md.file_offset + off + 4)
                (flags,) = struct.unpack("<I", fh.read(4))
                fh.seek(md.file_offset + off + 4)
                fh.write(struct.pack("<I", flags | 2))  # HasParent
        loc = _locator(
            {
                "parent_linkage": "{" + str(uuid.uuid4()) + "}",
                "relative_path": ".\\" + parent.name,
            }
        )
        loc_off = -(-end // 8) * 8
        assert loc_off + len(loc) <= md.length
        fh.seek(md.file_offset + loc_off)
        fh.write(loc)
        fh.seek(md.file_offset + 32 + 32 * count)
        # IsRequired (bit 2): a reader that does not understand the locator must refuse
        fh.write(PARENT_LOCATOR_GUID.bytes_le + struct.pack("<IIII", loc_off, len(loc), 4, 0))
        fh.seek(md.file_offset + 10)
        fh.write(struct.pack("<H", count + 1))
    return own


def expected_content(parent_raw: bytes, child: Path, child_raw: bytes) -> bytes:
    """What the child reads as: its own present blocks, the parent's everywhere else."""
    meta = read_vhdx_meta(str(child))
    out = bytearray(parent_raw)
    bs = meta.block_size
    with open(child, "rb") as fh:
        for block in range(-(-meta.virtual_size // bs)):
            fh.seek(meta.bat_offset + 8 * (block + block // meta.chunk_ratio))
            (raw,) = struct.unpack("<Q", fh.read(8))
            if raw & 7 == FULLY_PRESENT:
                out[block * bs:(block + 1) * bs] = child_raw[block * bs:(block + 1) * bs]
    return bytes(out)
