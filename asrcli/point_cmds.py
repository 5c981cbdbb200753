"""asr point list/verify/export: recovery points of a protected VM.

``export`` streams the point's stored frames and decodes them here (an encrypted VM's frames
need ``--encryption-key-file``, the customer-managed key, which never goes to the cloud); the
raw image is written block by block into a sparse file, so memory does not depend on the
disk's size. On a terminal a bar shows how far through the disk the export is (bytes of the
disk, rate, time left); the cloud sends only non-zero blocks, in order, each with its
chunk id. A group frame (several chunks in one frame) comes once and an empty frame for each
next block it holds; the member to read is named by the block's chunk id.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import grpc

import durablefile
from asrchannel.status import from_rpc_error
from asrcli.client import Client
from asrcli.failover_cmds import add_key_file_option
from asrcli.outfile import checked_target, write_failed
from asrcli.output import human_bytes, show, table, to_doc
from asrcli.progress import Bar, bar_wanted
from asrerrors import DataCorrupt, EncryptionKeyError
from asrpb import replication_pb2, replication_pb2_grpc
from chunkfmt import BLOCK_SIZE, ID_SIZE, CustomerKey, decode_chunk


def _stub(c: Client) -> replication_pb2_grpc.PointsStub:
    return replication_pb2_grpc.PointsStub(c.channel)


def point_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(_stub(c).ListPoints, replication_pb2.PointsRequest(vault=a.vault, vm=a.vm))
    points = [to_doc(p) for p in res.points]
    # SIZE: what the cycle that made the point uploaded (its own cost in storage, at most)
    return points, lambda rows: table([{**r, "size": r["uploaded_bytes"]} for r in rows],
                                      ["point_id", "created_at", "kind", "size", "changed_blocks", "location"],
                                      times=("created_at",), formats={"size": human_bytes})


def point_verify(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(_stub(c).VerifyPoint, replication_pb2.PointRef(vault=a.vault, vm=a.vm, point_id=a.point),
                 timeout=3600)
    doc = to_doc(res)
    doc["ok"] = res.ok
    doc.setdefault("damage", [])
    if not res.ok:
        a.exit_code = DataCorrupt.exit_code

    def printer(d: dict[str, Any]) -> None:
        if d["ok"]:
            print(f"point {d['point_id']} is intact ({d.get('packs_checked', 0)} packs checked)")
            return
        print(f"point {d['point_id']} is DAMAGED ({len(d['damage'])} problems):")
        for x in d["damage"]:
            print(f"  disk {x.get('disk_index', 0)} block {x.get('block_index', 0)}: {x['what']}")
    return doc, printer


def _export_ids(part: Any) -> list[bytes | None]:
    """The chunk id of each block of an ``ExportPart`` (None each from a service that sends
    none: its frames are single chunks)."""
    raw = bytes(part.ids)
    if not raw:
        return [None] * len(part.blocks)
    if len(raw) != ID_SIZE * len(part.blocks):
        raise DataCorrupt("the export stream sent a chunk id count that does not match its blocks")
    return [raw[i:i + ID_SIZE] for i in range(0, len(raw), ID_SIZE)]


def point_export(c: Client, a: argparse.Namespace) -> Any:
    """--out is checked before the export starts; the image is written through
    :func:`durablefile.atomic_writer`, so the target is the whole image or, after any failure
    (a full disk is DiskFull), untouched, with no partial file left."""
    out = checked_target(a.out)
    key = CustomerKey.load(a.encryption_key_file) if a.encryption_key_file else None
    bar = Bar(f"export disk {a.disk}") if bar_wanted(a.json) else None
    req = replication_pb2.ExportRequest(vault=a.vault, vm=a.vm, point_id=a.point, disk_index=a.disk)
    written = 0
    size = 0
    point_id = ""
    prev: bytes | None = None  # the last frame received: a group frame serves its next members
    try:
        with durablefile.atomic_writer(out) as f:
            for part in _stub(c).ExportPoint(req, timeout=24 * 3600):
                if part.point_id:
                    point_id, size = part.point_id, part.virtual_size
                    if part.encrypted and key is None:
                        raise EncryptionKeyError(
                            f"VM {a.vm} is encrypted with a customer-managed key",
                            action="Pass the site's customer key file with --encryption-key-file.")
                    f.truncate(size)
                for block, cid, frame in zip(part.blocks, _export_ids(part), part.frames, strict=True):
                    if not frame:  # the same frame as the block before (a group frame)
                        if prev is None:
                            raise DataCorrupt(f"the export stream sent block {block} without its frame")
                        frame = prev
                    # ``chunk``: the member of a group frame; the same object again for the
                    # next member, so decode_chunk decodes the group once
                    data = decode_chunk(frame, key.aead_key if key else None, chunk=cid)
                    prev = frame
                    os.pwrite(f.fileno(), data, block * BLOCK_SIZE)
                    written += len(data)
                if bar is not None and part.blocks:
                    bar.update(done_bytes=(part.blocks[-1] + 1) * BLOCK_SIZE, total_bytes=size)
            if bar is not None:
                bar.update(done_bytes=size, total_bytes=size)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc, f"the cloud service at {c.endpoint}") from exc
    except OSError as exc:
        raise write_failed(exc, out, "the exported image", f"Nothing was written at {out}.") from exc
    finally:
        if bar is not None:
            bar.close()
    doc = {"point_id": point_id, "disk": a.disk, "out": out, "virtual_size": size, "bytes_written": written}
    return doc, lambda d: show(d)


def add_parsers(sub: Any, vault_arg: Any) -> None:
    pt = sub.add_parser("point", help="recovery points").add_subparsers(dest="sub", required=True, metavar="COMMAND")
    p = pt.add_parser("list", help="a VM's recovery points (time, type, size)")
    p.add_argument("vm", help="VM name or id")
    vault_arg(p)
    p.set_defaults(fn=point_list)
    p = pt.add_parser("verify", help="re-read and re-hash everything a point references")
    p.add_argument("vm", help="VM name or id")
    p.add_argument("point", help="point id or 'latest'")
    vault_arg(p)
    p.set_defaults(fn=point_verify)
    p = pt.add_parser("export", help="write one disk of a point as a raw image")
    p.add_argument("vm", help="VM name or id")
    p.add_argument("point", help="point id or 'latest'")
    p.add_argument("--disk", type=int, required=True, help="disk index, counted from 0")
    p.add_argument("--out", required=True, help="the raw image file to write (its directory must exist)")
    add_key_file_option(p)
    vault_arg(p)
    p.set_defaults(fn=point_export)


__all__ = ["add_parsers"]
