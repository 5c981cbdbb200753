"""The portal's requests that change something: a VM's or a plan's operations and resuming a
job. Each names the gRPC method it stands for and is allowed by ``cloudsvc.roles`` exactly
when that method is (a Reader's POST is refused 403 like its RPC), then calls the same domain
service as the method (``operations.start``, ``protection``, ``jobs.resume``).

A button opens a confirmation page (GET) that names what will happen; only its form (POST,
with the CSRF token) acts. Which buttons a VM shows comes from the lifecycle table
(``VmStatus.allowed_operations``) and the operator's role, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, g, redirect, render_template, request, url_for

from asrerrors import NotFound, StateConflict, UsageError
from asrpb import failover_pb2
from cloudsvc.roles import allows, require
from cloudsvc.service import CloudService


@dataclass(frozen=True)
class Action:
    label: str
    method: str       # the gRPC method this stands for (its role in cloudsvc.roles)
    start: str        # operations.start's name, or "protect"/"unprotect"
    effect: str       # what will happen, for the confirmation ({target} is the VM or plan)
    points: bool = False
    network: bool = False
    direction: str = ""


F, P = "/asr.v1.Failover/", "/asr.v1.Protection/"
# Keyed by the lifecycle's operation names (cloudsvc.lifecycle.Op), in the order shown.
ACTIONS: dict[str, Action] = {
    "test-failover": Action("Test failover", F + "TestFailover", "test",
                            "creates a test copy of {target} from the chosen recovery point in the chosen network; "
                            "replication goes on, nothing on premises changes", points=True, network=True),
    "test-complete": Action("Complete test", F + "TestFailoverComplete", "test-complete",
                            "deletes the test VMs of {target} and their disks"),
    "planned-failover": Action("Planned failover", F + "PlannedFailover", "planned",
                               "shuts {target} down on premises, replicates the last changes (no data loss) and "
                               "starts it at the recovery site; commit makes it final"),
    "unplanned-failover": Action("Unplanned failover", F + "UnplannedFailover", "unplanned",
                                 "starts {target} at the recovery site from the chosen point at once, without "
                                 "waiting for the primary; the on-premises copy is fenced", points=True),
    "commit": Action("Commit", F + "Commit", "commit",
                     "makes the failover of {target} final: its other recovery points can no longer be chosen"),
    "cancel": Action("Cancel failover", F + "Cancel", "cancel",
                     "deletes the recovered VMs of {target} and gives the primary back (a new epoch)"),
    "change-point": Action("Change recovery point", F + "ChangePoint", "change-point",
                           "re-creates the recovered {target} from the chosen recovery point", points=True),
    "failback": Action("Failback", F + "PlannedFailover", "planned",
                       "shuts the recovered {target} down, ships the blocks that differ back on premises, starts it "
                       "there and resumes replication", direction="to-primary"),
    "reprotect": Action("Re-protect", F + "Reprotect", "reprotect",
                        "keeps the on-premises copy of {target} following the VM on its recovery host (reverse "
                        "replication, every copy interval); failback then ships only the last changes"),
    "migrate": Action("Migrate", F + "Migrate", "migrate",
                      "fails {target} over, commits and disables its protection"),
    "protect": Action("Enable replication", P + "ProtectVm", "protect",
                      "starts replicating {target} with its cloud's policy (the initial copy first)"),
    "unprotect": Action("Disable replication", P + "UnprotectVm", "unprotect",
                        "stops replicating {target} and deletes its recovery points"),
}
BUTTONS = [(op, a.label) for op, a in ACTIONS.items()]
PLAN_OPS = ("test-failover", "test-complete", "planned-failover", "unplanned-failover", "commit", "cancel")
RESUME = "/asr.v1.Failover/ResumeJob"


def action(op: str) -> Action:
    if op not in ACTIONS:
        raise UsageError(f"operation {op!r} is unknown", action="Use one of the buttons of the VM's page.")
    return ACTIONS[op]


def register(app: Flask, svc: CloudService) -> None:
    app.jinja_env.globals.update(ACTIONS=ACTIONS, PLAN_OPS=PLAN_OPS, RESUME=RESUME, may=lambda op: allows(
        g.session.role, ACTIONS[op].method))

    def point_choices(vault_id: str, vm: str) -> list[tuple[str, float, str]]:
        row = svc.inventory.find_vm(vault_id, vm)
        try:
            pts = svc.replication.points(vault_id, str(row["vm_id"]), vm)
        except (NotFound, StateConflict):
            return []
        return [(p.point_id, p.created_at, str(p.kind)) for p, _ in reversed(pts)]

    @app.get("/vaults/<vault>/<kind>/<target>/confirm/<op>")
    def confirm(vault: str, kind: str, target: str, op: str) -> Any:
        v = svc.vaults.get(vault)
        a = action(op)
        require(g.session.role, g.session.name, a.method)
        if kind == "plans":
            svc.plans.message(v.id, target)
            points: list[tuple[str, float, str]] = []
        elif kind == "vms":
            svc.inventory.find_vm(v.id, target)
            points = point_choices(v.id, target) if a.points else []
        else:
            raise NotFound(f"{kind!r} is not a kind of target", action="Use the VM or plan pages.")
        networks = [str(n["name"]) for n in svc.vaults.list_networks(v.id)] if a.network else []
        return render_template("confirm.html", vault=v, vaults=svc.vaults.list_vaults(), kind=kind, target=target,
                               op=op, a=a, effect=a.effect.format(target=("plan " if kind == "plans" else "VM ")
                                                                  + target),
                               points=points, networks=networks)

    @app.post("/vaults/<vault>/<kind>/<target>/do/<op>")
    def perform(vault: str, kind: str, target: str, op: str) -> Any:
        v = svc.vaults.get(vault)
        a = action(op)
        require(g.session.role, g.session.name, a.method)
        if kind not in ("vms", "plans") or (kind == "plans" and op not in PLAN_OPS):
            raise UsageError(f"{op} is not an operation of {kind}")
        if a.start == "protect":
            job = svc.protection.protect_vm(v, target, None, "")
        elif a.start == "unprotect":
            job = svc.protection.unprotect_vm(v, target, False)
        else:
            req = failover_pb2.FailoverRequest(vault=v.name, direction=a.direction)
            if kind == "plans":
                req.plan = target
            else:
                req.vm = target
            point = request.form.get("point", "latest")
            if a.points and point != "latest":
                req.point = point
            if a.network:
                req.network = request.form.get("network", "none")
            job = svc.operations.start(v, a.start, req)
        return redirect(url_for("job_page", vault=v.name, job_id=job), code=303)

    @app.post("/vaults/<vault>/jobs/<job_id>/resume")
    def resume(vault: str, job_id: str) -> Any:
        v = svc.vaults.get(vault)
        require(g.session.role, g.session.name, RESUME)
        svc.jobs.resume(v.id, job_id, f"resumed by {g.session.name} in the portal")
        return redirect(url_for("job_page", vault=v.name, job_id=job_id), code=303)
