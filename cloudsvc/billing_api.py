"""The Billing service (operator): `asr billing report`."""

from __future__ import annotations

import json
from typing import Any

from asrpb import operator_pb2, operator_pb2_grpc
from cloudsvc.billing import ENDS, PRICE_PER_EXCESS_GB, STARTS, VmUsage, compute, intervals_from_events, month_bounds
from cloudsvc.service import CloudService


def _vm_ids(context: str) -> list[str]:
    ctx = json.loads(context or "{}")
    if "vm_id" in ctx:
        return [str(ctx["vm_id"])]
    return [str(v) for v in ctx.get("vms", {})]


class BillingApi(operator_pb2_grpc.BillingServicer):
    def __init__(self, svc: CloudService) -> None:
        self.svc = svc

    def Report(self, request: Any, context: Any) -> operator_pb2.BillingReport:
        vault = self.svc.vaults.get(request.vault)
        lo, hi, _ = month_bounds(request.month)
        kinds = STARTS + ENDS
        events: dict[str, list[tuple[float, str]]] = {}
        names: dict[str, str] = {}
        rows = self.svc.db.query(
            f"SELECT kind, target, ended_at, context FROM jobs WHERE vault_id=? AND state='Succeeded'"
            f" AND kind IN ({','.join('?' * len(kinds))})", (vault.id, *kinds))
        for r in rows:
            for vm_id in _vm_ids(r["context"]):
                events.setdefault(vm_id, []).append((float(r["ended_at"]), r["kind"]))
                names.setdefault(vm_id, r["target"])
        usages = []
        now = self.svc.clock.now()
        for vm_id, evs in events.items():
            got = self.svc.db.one(
                "SELECT coalesce(sum(uploaded_bytes), 0) AS b FROM recovery_points WHERE vault_id=? AND vm_id=?"
                " AND created_at >= ? AND created_at < ?", (vault.id, vm_id, lo, hi))
            usages.append(VmUsage(vm_id, names[vm_id], intervals_from_events(evs, now), int(got["b"]) if got else 0))
        rep = compute(request.month, request.scenario or "onprem-to-cloud", usages)
        return operator_pb2.BillingReport(
            month=rep.month, scenario=rep.scenario, days_in_month=rep.days_in_month,
            average_protected_vms=rep.average_protected_vms, unit_price=rep.unit_price,
            protection_charge=rep.protection_charge, replicated_bytes=rep.replicated_bytes,
            included_gb=rep.included_gb, excess_gb=rep.excess_gb, price_per_excess_gb=PRICE_PER_EXCESS_GB,
            storage_charge=rep.storage_charge, total=rep.total, currency="USD",
            vms=[operator_pb2.BillingLine(vm_id=u.vm_id, name=u.name, protected_days=d,
                                          replicated_bytes=u.replicated_bytes) for u, d in rep.lines],
        )
