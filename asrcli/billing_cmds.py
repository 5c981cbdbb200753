"""asr billing report."""

from __future__ import annotations

import argparse
from typing import Any

from asrcli.client import Client
from asrcli.output import human_bytes, show, table, to_doc
from asrpb import operator_pb2, operator_pb2_grpc


def billing_report(c: Client, a: argparse.Namespace) -> Any:
    stub = operator_pb2_grpc.BillingStub(c.channel)
    rep = c.call(stub.Report, operator_pb2.BillingRequest(vault=a.vault, month=a.month, scenario=a.scenario))
    doc = to_doc(rep)

    def printer(d: dict[str, Any]) -> None:
        show({k: _figure(k, v) for k, v in d.items() if k != "vms"})
        table(d.get("vms", []), ["name", "vm_id", "protected_days", "replicated_bytes"],
              formats={"protected_days": lambda v: f"{float(v):.3f}", "replicated_bytes": human_bytes})

    return doc, printer


def _figure(key: str, value: Any) -> Any:
    """Figures for people: money to the cent, bytes in binary units, other fractions to 3 places."""
    if not isinstance(value, float):
        return human_bytes(value) if key.endswith("_bytes") else value
    if key in ("total", "unit_price", "protection_charge", "storage_charge", "price_per_excess_gb"):
        return f"{value:.2f}"
    return f"{value:.3f}"


def add_parsers(sub: Any, vault_arg: Any) -> None:
    b = sub.add_parser("billing", help="what protection cost").add_subparsers(dest="sub", required=True,
                                                                              metavar="COMMAND")
    p = b.add_parser("report", help="a month's charges: protected VMs pro-rated per day, excess replication")
    vault_arg(p)
    p.add_argument("--month", required=True, help="YYYY-MM (UTC)")
    p.add_argument("--scenario", default="onprem-to-cloud", choices=["onprem-to-cloud", "onprem-to-onprem"],
                   help="on-premises to the vault (default) or on-premises to on-premises (site to site)")
    p.set_defaults(fn=billing_report)
