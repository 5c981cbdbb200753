"""The Protection service: clouds, VMs, protection and jobs, for the operator."""

from __future__ import annotations

import json
from typing import Any

from asrclock import iso
from asrerrors import NotFound, UsageError
from asrpb import common_pb2, inventory_pb2, operator_pb2, operator_pb2_grpc
from cloudsvc.events import RANK, Event, EventFilter, Severity
from cloudsvc.failover.recovered import recovered_of_vm
from cloudsvc.inventory import parse_vm
from cloudsvc.lifecycle import ItemState, Side, allowed
from cloudsvc.service import CloudService
from cloudsvc.sitetosite import Mapping
from metastore.database import Row

LATEST_EVENTS = 3   # shown by asr vm show


def error_msg(text: str) -> common_pb2.ErrorDetail:
    if not text:
        return common_pb2.ErrorDetail()
    d = json.loads(text)
    return common_pb2.ErrorDetail(code=d.get("code", ""), exit_code=int(d.get("exit_code", 1)),
                                  message=d.get("message", ""), possible_causes=d.get("possible_causes", []),
                                  recommended_action=d.get("recommended_action", ""), details=d.get("details", []))


def job_msg(job: Row, tasks: list[Row]) -> operator_pb2.Job:
    done = sum(1 for t in tasks if t["state"] in ("Succeeded", "Failed", "Cancelled"))
    return operator_pb2.Job(
        id=job["id"], kind=job["kind"], target=job["target"], state=job["state"], created_at=job["created_at"],
        started_at=job["started_at"], ended_at=job["ended_at"], error=error_msg(job["error"]),
        progress=(done / len(tasks)) if tasks else (1.0 if job["state"] == "Succeeded" else 0.0),
        bytes_done=sum(int(t["bytes_done"]) for t in tasks), bytes_total=sum(int(t["bytes_total"]) for t in tasks),
        tasks=[operator_pb2.JobTask(name=t["name"], state=t["state"], started_at=t["started_at"],
                                    ended_at=t["ended_at"], error=error_msg(t["error"]), output=t["output"])
               for t in tasks],
    )


def vm_status(svc: CloudService, vault_id: str, row: Row) -> operator_pb2.VmStatus:
    vm = parse_vm(row)
    item = svc.items.get(vault_id, vm.vm_id)
    state = item.state if item else ItemState.UNPROTECTED
    st = operator_pb2.VmStatus(
        vm=vm, cloud=row["cloud"], provider=row["provider"], protection_state=state.value,
        allowed_operations=item.allowed if item else allowed(state),
    )
    if item is not None:
        st.policy.CopyFrom(item.policy)
        st.active_location = item.location.value
        st.epoch = item.epoch
        if item.location == Side.PRIMARY:
            st.primary_copy = "Active"
        else:
            st.primary_copy = "Stale"
            detail = (f"the copy on {row['host']} is fenced since epoch {item.epoch} ({iso(item.switched_at)}): the "
                      "VM runs at the recovery site; the on-premises copy may neither replicate nor start until "
                      "failback")
            if item.fenced_attempt_at >= item.switched_at and item.fenced_attempt_at:
                detail += (f"; last fenced attempt from {item.fenced_attempt_from} at "
                           f"{iso(item.fenced_attempt_at)}")
            st.primary_copy_detail = detail
        svc.replication.describe(vault_id, item, st)
        if item.site_to_site:
            st.recovery_cloud = item.recovery_cloud
            st.recovery_host = item.recovery_host
            st.pairing_id = item.pairing_id
            rs = svc.replicas.status(vault_id, vm.vm_id)
            st.replica_points = len(svc.replicas.points(vault_id, vm.vm_id))
            # the initial copy is done once the recovery host reports a point (the vault's own
            # progress rows never see one of these VMs' points)
            st.initial_replication_progress = 1.0 if st.replica_points else 0.0
            if rs is not None and item.state == ItemState.REVERSE_PROTECTED:
                st.reverse_synced_at = float(rs["reverse_synced_at"])
                st.reverse_blocks = int(rs["reverse_blocks"])
                st.reverse_error = str(rs["reverse_error"])
            if rs is not None:
                st.replica_free_bytes = int(rs["free_bytes"])
                st.last_replica_report_at = float(rs["reported_at"])
                st.last_replication = float(rs["last_received_at"])
    st.recovered_vms.extend(recovered_of_vm(svc.db, vault_id, vm.vm_id))
    st.latest_events.extend(event_msg(e) for e in svc.events.list(vault_id, EventFilter(vm_id=vm.vm_id,
                                                                                        limit=LATEST_EVENTS)))
    return st


def severity_of(text: str) -> Severity:
    """The minimum severity a request names (any case); "" is every event."""
    for s in RANK:
        if text.lower() == str(s).lower():
            return s
    if not text:
        return Severity.INFO
    raise UsageError(f"severity {text!r} is unknown", causes=("Severities: info, warning, critical.",),
                     action="Pass --severity info, warning or critical (that severity and worse).")


def event_msg(e: Event) -> operator_pb2.Event:
    return operator_pb2.Event(id=e.id, at=e.at, severity=e.severity, vm_id=e.vm_id, vm_name=e.vm_name,
                              server=e.server, code=e.code, message=e.message)


class ProtectionApi(operator_pb2_grpc.ProtectionServicer):
    """Translates the Protection service to inventory, protection, lifecycle, jobs and events."""

    def __init__(self, svc: CloudService) -> None:
        self.svc = svc

    def ListClouds(self, request: Any, context: Any) -> operator_pb2.CloudList:
        v = self.svc.vaults.get(request.vault)
        out = []
        for c in self.svc.inventory.clouds(v.id):
            policy = self.svc.protection.policy(v.id, str(c["name"]))
            info = operator_pb2.CloudInfo(name=str(c["name"]), provider=str(c["provider"]),
                                          hosts=list(c["hosts"]), vms=int(c["vms"]),  # type: ignore[call-overload]
                                          protected=policy is not None,
                                          networks=list(c["networks"]))  # type: ignore[call-overload]
            info.host_details.extend(operator_pb2.CloudHost(
                name=h["name"], connected=bool(h["connected"]), replica_address=h["replica_address"],
                replica_free_bytes=int(h["replica_free_bytes"])) for h in c["host_rows"])  # type: ignore[attr-defined]
            if policy is not None:
                info.policy.CopyFrom(policy)
            out.append(info)
        return operator_pb2.CloudList(clouds=out)

    def ProtectCloud(self, request: Any, context: Any) -> operator_pb2.JobRef:
        v = self.svc.vaults.get(request.vault)
        policy = inventory_pb2.Policy()
        policy.CopyFrom(request.policy)
        return operator_pb2.JobRef(vault=v.name, id=self.svc.protection.protect_cloud(v, request.cloud, policy))

    def ListVms(self, request: Any, context: Any) -> operator_pb2.VmList:
        v = self.svc.vaults.get(request.vault)
        rows = self.svc.inventory.vms(v.id, request.cloud)
        return operator_pb2.VmList(vms=[vm_status(self.svc, v.id, r) for r in rows])

    def GetVm(self, request: Any, context: Any) -> operator_pb2.VmStatus:
        v = self.svc.vaults.get(request.vault)
        return vm_status(self.svc, v.id, self.svc.inventory.find_vm(v.id, request.vm))

    def ProtectVm(self, request: Any, context: Any) -> operator_pb2.JobRef:
        v = self.svc.vaults.get(request.vault)
        nic = request.nic - 1 if request.nic > 0 else None
        return operator_pb2.JobRef(vault=v.name, id=self.svc.protection.protect_vm(v, request.vm, nic,
                                                                                 request.recovery_host))

    def UnprotectVm(self, request: Any, context: Any) -> operator_pb2.JobRef:
        v = self.svc.vaults.get(request.vault)
        return operator_pb2.JobRef(vault=v.name, id=self.svc.protection.unprotect_vm(v, request.vm, request.force))

    def ListEvents(self, request: Any, context: Any) -> operator_pb2.EventList:
        v = self.svc.vaults.get(request.vault)
        vm_id = str(self.svc.inventory.find_vm(v.id, request.vm)["vm_id"]) if request.vm else ""
        f = EventFilter(vm_id=vm_id, server=request.server, since=request.since,
                        severity=severity_of(request.severity), limit=request.limit)
        return operator_pb2.EventList(events=[event_msg(e) for e in self.svc.events.list(v.id, f)])

    def ListJobs(self, request: Any, context: Any) -> operator_pb2.JobList:
        v = self.svc.vaults.get(request.vault)
        target = ""
        if request.vm:
            try:
                target = str(self.svc.inventory.find_vm(v.id, request.vm)["name"])
            except NotFound:   # a VM gone from the inventory (migrated, deleted) keeps its jobs
                target = request.vm
        jobs = self.svc.jobs.list_jobs(v.id, request.limit, state=request.state, kind=request.kind, target=target)
        return operator_pb2.JobList(jobs=[job_msg(j, self.svc.jobs.tasks(j["id"])) for j in jobs])

    def GetJob(self, request: Any, context: Any) -> operator_pb2.Job:
        v = self.svc.vaults.get(request.vault)
        job, tasks = self.svc.jobs.get(v.id, request.id)
        return job_msg(job, tasks)

    def CreateNetworkMapping(self, request: Any, context: Any) -> operator_pb2.NetworkMapping:
        v = self.svc.vaults.get(request.vault)
        m = self.svc.site.create_mapping(v.id, Mapping(request.primary_cloud, request.primary_network,
                                                       request.recovery_cloud, request.recovery_network, 0.0))
        return mapping_msg(m)

    def ListNetworkMappings(self, request: Any, context: Any) -> operator_pb2.NetworkMappingList:
        v = self.svc.vaults.get(request.vault)
        return operator_pb2.NetworkMappingList(mappings=[mapping_msg(m) for m in self.svc.site.mappings(v.id)])

    def DeleteNetworkMapping(self, request: Any, context: Any) -> common_pb2.Empty:
        v = self.svc.vaults.get(request.vault)
        self.svc.site.delete_mapping(v.id, request.primary_cloud, request.primary_network)
        return common_pb2.Empty()


def mapping_msg(m: Mapping) -> operator_pb2.NetworkMapping:
    return operator_pb2.NetworkMapping(primary_cloud=m.primary_cloud, primary_network=m.primary_network,
                                       recovery_cloud=m.recovery_cloud, recovery_network=m.recovery_network,
                                       created_at=m.created_at)
