"""The Billing service (operator): `asr billing report`."""

from __future__ import annotations

from typing import Any

from asrpb import operator_pb2, operator_pb2_grpc
from cloudsvc.billing import PRICE_PER_EXCESS_GB
from cloudsvc.service import CloudService


class BillingApi(operator_pb2_grpc.BillingServicer):
    def __init__(self, svc: CloudService) -> None:
        self.svc = svc

    def Report(self, request: Any, context: Any) -> operator_pb2.BillingReport:
        vault = self.svc.vaults.get(request.vault)
        rep = self.svc.billing.report(vault.id, request.month, request.scenario)
        return operator_pb2.BillingReport(
            month=rep.month, scenario=rep.scenario, days_in_month=rep.days_in_month,
            average_protected_vms=float(rep.average_protected_vms), unit_price=float(rep.unit_price),
            protection_charge=float(rep.protection_charge), replicated_bytes=rep.replicated_bytes,
            included_gb=rep.included_gb, excess_gb=rep.excess_gb, price_per_excess_gb=float(PRICE_PER_EXCESS_GB),
            storage_charge=float(rep.storage_charge), total=float(rep.total), currency="USD",
            vms=[operator_pb2.BillingLine(vm_id=u.vm_id, name=u.name, protected_days=float(d),
                                          replicated_bytes=u.replicated_bytes) for u, d in rep.lines],
        )
