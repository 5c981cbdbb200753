"""The Failover service (operator) and the FailbackData service (agents)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from asrchannel.authz import current_identity
from asrpb import common_pb2, failover_pb2, failover_pb2_grpc, operator_pb2
from cloudsvc.failover.recovered import recovered_msg
from cloudsvc.service import CloudService

POLICY: dict[str, set[str]] = {
    "/asr.v1.Failover/": {"operator"},
    "/asr.v1.FailbackData/": {"agent"},
}


class FailoverApi(failover_pb2_grpc.FailoverServicer):
    """Translates the Failover service to the failover domain (``operations``, ``plans``,
    ``recovered``, ``jobs``); no behaviour of its own."""

    def __init__(self, svc: CloudService) -> None:
        self.svc = svc

    def _start(self, op: str, request: Any) -> operator_pb2.JobRef:
        v = self.svc.vaults.get(request.vault)
        return operator_pb2.JobRef(vault=v.name, id=self.svc.operations.start(v, op, request))

    def TestFailover(self, request: Any, context: Any) -> operator_pb2.JobRef:
        return self._start("test", request)

    def TestFailoverComplete(self, request: Any, context: Any) -> operator_pb2.JobRef:
        return self._start("test-complete", request)

    def PlannedFailover(self, request: Any, context: Any) -> operator_pb2.JobRef:
        return self._start("planned", request)

    def UnplannedFailover(self, request: Any, context: Any) -> operator_pb2.JobRef:
        return self._start("unplanned", request)

    def Commit(self, request: Any, context: Any) -> operator_pb2.JobRef:
        return self._start("commit", request)

    def Cancel(self, request: Any, context: Any) -> operator_pb2.JobRef:
        return self._start("cancel", request)

    def ChangePoint(self, request: Any, context: Any) -> operator_pb2.JobRef:
        return self._start("change-point", request)

    def Migrate(self, request: Any, context: Any) -> operator_pb2.JobRef:
        return self._start("migrate", request)

    def Reprotect(self, request: Any, context: Any) -> operator_pb2.JobRef:
        return self._start("reprotect", request)

    def ListRecoveredVms(self, request: Any, context: Any) -> failover_pb2.RecoveredVmList:
        v = self.svc.vaults.get(request.vault)
        return failover_pb2.RecoveredVmList(vms=[recovered_msg(r) for r in self.svc.recovered.of_vault(v.id)])

    def DeleteRecoveredVm(self, request: Any, context: Any) -> common_pb2.Empty:
        self.svc.deletion.delete_recovered(self.svc.vaults.get(request.vault), request.vm)
        return common_pb2.Empty()

    def ResumeJob(self, request: Any, context: Any) -> common_pb2.Empty:
        v = self.svc.vaults.get(request.vault)
        self.svc.jobs.resume(v.id, request.id, "resumed by the operator")
        return common_pb2.Empty()

    def CreatePlan(self, request: Any, context: Any) -> failover_pb2.Plan:
        v = self.svc.vaults.get(request.vault)
        self.svc.plans.create(v.id, request.name, list(request.vms))
        return self.svc.plans.message(v.id, request.name)

    def GetPlan(self, request: Any, context: Any) -> failover_pb2.Plan:
        v = self.svc.vaults.get(request.vault)
        return self.svc.plans.message(v.id, request.plan)

    def ListPlans(self, request: Any, context: Any) -> failover_pb2.PlanList:
        v = self.svc.vaults.get(request.vault)
        return failover_pb2.PlanList(plans=[self.svc.plans.message(v.id, n) for n in self.svc.plans.names(v.id)])

    def AddGroup(self, request: Any, context: Any) -> failover_pb2.Plan:
        v = self.svc.vaults.get(request.vault)
        self.svc.plans.add_group(v.id, request.plan, list(request.vms))
        return self.svc.plans.message(v.id, request.plan)

    def AddAction(self, request: Any, context: Any) -> failover_pb2.Plan:
        v = self.svc.vaults.get(request.vault)
        self.svc.plans.add_action(v.id, request.plan, request)
        return self.svc.plans.message(v.id, request.plan)

    def DeletePlan(self, request: Any, context: Any) -> common_pb2.Empty:
        v = self.svc.vaults.get(request.vault)
        self.svc.plans.delete(v.id, request.plan)
        return common_pb2.Empty()


class FailbackDataApi(failover_pb2_grpc.FailbackDataServicer):
    def __init__(self, svc: CloudService) -> None:
        self.svc = svc

    def Diff(self, request_iterator: Iterator[Any], context: Any) -> Iterator[failover_pb2.BlockDiff]:
        yield from self.svc.failback.diff(current_identity(), request_iterator)


def add_to_server(svc: CloudService, server: grpc.Server) -> list[str]:
    """Register both services; returns their names (for reflection)."""
    failover_pb2_grpc.add_FailoverServicer_to_server(FailoverApi(svc), server)
    failover_pb2_grpc.add_FailbackDataServicer_to_server(FailbackDataApi(svc), server)
    return [failover_pb2.DESCRIPTOR.services_by_name[n].full_name for n in ("Failover", "FailbackData")]
