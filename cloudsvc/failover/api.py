"""The Failover service (operator) and the FailbackData service (agents)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from asrchannel.authz import current_identity
from asrerrors import StateConflict
from asrpb import common_pb2, failover_pb2, failover_pb2_grpc, operator_pb2
from cloudsvc.failover.failback import FailbackServer
from cloudsvc.failover.operations import KINDS, Operations
from cloudsvc.failover.plans import Plans
from cloudsvc.failover.recovered import Recovered, recovered_msg
from cloudsvc.failover.runner import Runner

POLICY: dict[str, set[str]] = {
    "/asr.v1.Failover/": {"operator"},
    "/asr.v1.FailbackData/": {"agent"},
}


class FailoverService:
    """The failover parts of one cloud service process."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc
        self.recovered = Recovered(svc.db, svc.clock, svc.vaults)
        self.plans = Plans(svc.db, svc.clock, svc.inventory)
        self.ops = Operations(svc, self.recovered, self.plans)
        self.runner = Runner(svc, self.ops, self.recovered)
        self.failback = FailbackServer(svc.db)
        for kind in KINDS:
            svc.jobs.hooks[kind] = self.ops.job_done
        # retention keeps the points recovered VMs are being made from or were made from
        svc.replication.pins.append(self.recovered.pinned_points)

    def resume(self, vault_id: str, job_id: str) -> None:
        job, tasks = self.svc.jobs.get(vault_id, job_id)
        waiting = [t for t in tasks if t["state"] == "Suspended"]
        if job["state"] != "Suspended" or not waiting:
            raise StateConflict(f"job {job_id} is {job['state']}, not waiting for a manual action",
                                action="Only a Suspended job can be resumed.")
        with self.svc.db.write() as conn:
            conn.execute("UPDATE jobs SET state='InProgress' WHERE id=?", (job_id,))
            self.svc.jobs.finish_task(conn, job_id, waiting[0]["seq"], True, "resumed by the operator")


class FailoverApi(failover_pb2_grpc.FailoverServicer):
    def __init__(self, svc: Any, fo: FailoverService) -> None:
        self.svc = svc
        self.fo = fo

    def _start(self, op: str, request: Any) -> operator_pb2.JobRef:
        v = self.svc.vaults.get(request.vault)
        return operator_pb2.JobRef(vault=v.name, id=self.fo.ops.start(v, op, request))

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

    def ListRecoveredVms(self, request: Any, context: Any) -> failover_pb2.RecoveredVmList:
        v = self.svc.vaults.get(request.vault)
        return failover_pb2.RecoveredVmList(vms=[recovered_msg(r) for r in self.fo.recovered.list(v.id)])

    def ResumeJob(self, request: Any, context: Any) -> common_pb2.Empty:
        v = self.svc.vaults.get(request.vault)
        self.fo.resume(v.id, request.id)
        return common_pb2.Empty()

    def CreatePlan(self, request: Any, context: Any) -> failover_pb2.Plan:
        v = self.svc.vaults.get(request.vault)
        self.fo.plans.create(v.id, request.name, list(request.vms))
        return self.fo.plans.message(v.id, request.name)

    def GetPlan(self, request: Any, context: Any) -> failover_pb2.Plan:
        v = self.svc.vaults.get(request.vault)
        return self.fo.plans.message(v.id, request.plan)

    def ListPlans(self, request: Any, context: Any) -> failover_pb2.PlanList:
        v = self.svc.vaults.get(request.vault)
        return failover_pb2.PlanList(plans=[self.fo.plans.message(v.id, n) for n in self.fo.plans.names(v.id)])

    def AddGroup(self, request: Any, context: Any) -> failover_pb2.Plan:
        v = self.svc.vaults.get(request.vault)
        self.fo.plans.add_group(v.id, request.plan, list(request.vms))
        return self.fo.plans.message(v.id, request.plan)

    def AddAction(self, request: Any, context: Any) -> failover_pb2.Plan:
        v = self.svc.vaults.get(request.vault)
        self.fo.plans.add_action(v.id, request.plan, request)
        return self.fo.plans.message(v.id, request.plan)

    def DeletePlan(self, request: Any, context: Any) -> common_pb2.Empty:
        v = self.svc.vaults.get(request.vault)
        self.fo.plans.delete(v.id, request.plan)
        return common_pb2.Empty()


class FailbackDataApi(failover_pb2_grpc.FailbackDataServicer):
    def __init__(self, fo: FailoverService) -> None:
        self.fo = fo

    def Diff(self, request_iterator: Iterator[Any], context: Any) -> Iterator[failover_pb2.BlockDiff]:
        yield from self.fo.failback.diff(current_identity(), request_iterator)


def add_to_server(svc: Any, server: grpc.Server) -> list[str]:
    """Register both services and start the job runner; returns the service names."""
    fo = FailoverService(svc)
    svc.failover = fo
    failover_pb2_grpc.add_FailoverServicer_to_server(FailoverApi(svc, fo), server)
    failover_pb2_grpc.add_FailbackDataServicer_to_server(FailbackDataApi(fo), server)
    fo.runner.start()
    return [failover_pb2.DESCRIPTOR.services_by_name[n].full_name for n in ("Failover", "FailbackData")]
