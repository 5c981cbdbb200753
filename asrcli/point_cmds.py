"""asr point list/verify/export: recovery points of a protected VM.

``export`` streams the point's stored frames and decodes them here (an encrypted VM's frames
need ``--key-file``, the customer-managed key, which never goes to the cloud); the raw image is
written block by block into a sparse file, so memory does not depend on the disk's size.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import grpc

import durablefile
from asrchannel.status import from_rpc_error
from asrcli.client import Client
from asrcli.outfile import checked_target, write_failed
from asrcli.output import show, table, to_doc
from asrerrors import DataCorrupt, EncryptionKeyError
from asrpb import replication_pb2, replication_pb2_grpc
from chunkfmt import BLOCK_SIZE, CustomerKey, decode_chunk


def _stub(c: Client) -> replication_pb2_grpc.PointsStub:
    return replication_pb2_grpc.PointsStub(c.channel)


def point_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(_stub(c).ListPoints, replication_pb2.PointsRequest(vault=a.vault, vm=a.vm))
    doc = to_doc(res)
    doc.setdefault("points", [])
    for p in doc["points"]:
        p["size"] = int(p.get("uploaded_bytes", 0))
    return doc, lambda d: table(d["points"], ["point_id", "created_at", "kind", "size", "changed_blocks"],
                                times=("created_at",))


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


def point_export(c: Client, a: argparse.Namespace) -> Any:
    """--out is checked before the export starts; the image is written through
    :func:`durablefile.atomic_writer`, so the target is the whole image or, after any failure
    (a full disk is DiskFull), untouched, with no partial file left."""
    out = checked_target(a.out)
    key = CustomerKey.load(a.key_file) if a.key_file else None
    req = replication_pb2.ExportRequest(vault=a.vault, vm=a.vm, point_id=a.point, disk_index=a.disk)
    written = 0
    size = 0
    point_id = ""
    try:
        with durablefile.atomic_writer(out) as f:
            for part in _stub(c).ExportPoint(req, timeout=24 * 3600):
                if part.point_id:
                    point_id, size = part.point_id, part.virtual_size
                    if part.encrypted and key is None:
                        raise EncryptionKeyError(
                            f"VM {a.vm} is encrypted with a customer-managed key",
                            action="Pass the site's customer key file with --key-file.")
                    f.truncate(size)
                for block, frame in zip(part.blocks, part.frames, strict=True):
                    data = decode_chunk(frame, key.aead_key if key else None)
                    os.pwrite(f.fileno(), data, block * BLOCK_SIZE)
                    written += len(data)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc, f"the cloud service at {c.endpoint}") from exc
    except OSError as exc:
        raise write_failed(exc, out, "the exported image", f"Nothing was written at {out}.") from exc
    doc = {"point_id": point_id, "disk": a.disk, "out": out, "virtual_size": size, "bytes_written": written}
    return doc, lambda d: show(d)


def add_parsers(sub: Any, vault_arg: Any) -> None:
    pt = sub.add_parser("point", help="recovery points").add_subparsers(dest="sub", required=True)
    p = pt.add_parser("list", help="a VM's recovery points (time, type, size)")
    p.add_argument("vm")
    vault_arg(p)
    p.set_defaults(fn=point_list)
    p = pt.add_parser("verify", help="re-read and re-hash everything a point references")
    p.add_argument("vm")
    p.add_argument("point", help="point id or 'latest'")
    vault_arg(p)
    p.set_defaults(fn=point_verify)
    p = pt.add_parser("export", help="write one disk of a point as a raw image")
    p.add_argument("vm")
    p.add_argument("point", help="point id or 'latest'")
    p.add_argument("--disk", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--key-file", help="customer-managed key file (encrypted VMs)")
    vault_arg(p)
    p.set_defaults(fn=point_export)


__all__ = ["add_parsers"]
