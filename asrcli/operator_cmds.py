"""asr operator: operators of the portal and the API, with roles (Reader, Operator, Contributor)."""

from __future__ import annotations

import argparse
from typing import Any

import durablefile
from asrcli.client import Client
from asrcli.outfile import checked_target, write_failed
from asrpb import operator_pb2


def operator_create(c: Client, a: argparse.Namespace) -> Any:
    """Create an operator; print its portal password once (the service keeps only its hash).
    With --credentials-out, also write its operator credential for `asr` (0600)."""
    out = checked_target(a.credentials_out, "--credentials-out") if a.credentials_out else ""
    res = c.call(c.operator.CreateOperator, operator_pb2.CreateOperatorRequest(name=a.name, role=a.role))
    if out:
        try:
            durablefile.write_atomic(out, res.credential_json.encode(), durablefile.PRIVATE)
        except OSError as exc:
            raise write_failed(exc, out, "operator credential",
                               f"operator {res.name} exists; its credential was not written") from exc
    doc = {"name": res.name, "role": res.role, "password": res.password, "portal_url": res.portal_url,
           "credentials": out}

    def show(d: dict[str, Any]) -> None:
        print(f"created operator {d['name']} ({d['role']})")
        print(f"  one-time password: {d['password']}   (shown only now; the service keeps its hash)")
        if d["portal_url"]:
            print(f"  sign in at: {d['portal_url']}signin")
        if d["credentials"]:
            print(f"  asr credential: {d['credentials']}")

    return doc, show


def add_parsers(sub: Any, vault_arg: Any) -> None:
    o = sub.add_parser("operator", help="operators of the portal and the API, with roles").add_subparsers(
        dest="sub", required=True, metavar="COMMAND")
    p = o.add_parser("create", help="create an operator: prints a one-time portal password")
    p.add_argument("name", help="the operator's name (letters, digits, hyphens)")
    p.add_argument("--role", required=True, choices=["Reader", "Operator", "Contributor"],
                   help="Reader sees everything and changes nothing; Operator also fails over and resumes jobs; "
                        "Contributor does everything")
    p.add_argument("--credentials-out", default="", metavar="FILE",
                   help="also write an operator credential for asr with this role (0600)")
    p.set_defaults(fn=operator_create)
