"""asr failover / recovered-vm / plan commands, and asr job resume."""

from __future__ import annotations

import argparse
from typing import Any

from asrcli.client import Client
from asrcli.jobwait import add_wait_options, job_result
from asrcli.output import table, to_doc
from asrerrors import EncryptionKeyError, UsageError
from asrpb import failover_pb2, failover_pb2_grpc, operator_pb2

VERBS = {
    "test": "TestFailover", "test-complete": "TestFailoverComplete", "planned": "PlannedFailover",
    "unplanned": "UnplannedFailover", "commit": "Commit", "cancel": "Cancel", "change-point": "ChangePoint",
    "migrate": "Migrate", "reprotect": "Reprotect",
}


def _stub(c: Client) -> failover_pb2_grpc.FailoverStub:
    return failover_pb2_grpc.FailoverStub(c.channel)


_job_result = job_result


def add_key_file_option(p: argparse.ArgumentParser) -> None:
    """--encryption-key-file, the one name of the customer-managed key file on every command
    that reads one; --key-file, its earlier name on point export, is kept as a hidden alias."""
    p.add_argument("--encryption-key-file", dest="encryption_key_file",
                   help="customer-managed key file of an encrypted VM (the provider's STATE_DIR/customer.key)")
    p.add_argument("--key-file", dest="encryption_key_file", help=argparse.SUPPRESS)


def failover(c: Client, a: argparse.Namespace) -> Any:
    if bool(a.vm) == bool(a.plan):
        raise UsageError("name one VM, or a recovery plan with --plan")
    key = b""
    if getattr(a, "encryption_key_file", None):
        try:
            with open(a.encryption_key_file, "rb") as f:
                key = f.read()
        except OSError as exc:
            raise EncryptionKeyError(f"cannot read key file {a.encryption_key_file}: {exc.strerror}") from exc
    req = failover_pb2.FailoverRequest(
        vault=a.vault, vm=a.vm or "", plan=a.plan or "", point=getattr(a, "point", "") or "",
        network=getattr(a, "network", "") or "", subnet=getattr(a, "subnet", "") or "", encryption_key=key,
        direction=getattr(a, "direction", "") or "", shutdown_source=bool(getattr(a, "shutdown_source", False)),
        size=getattr(a, "size", "") or "",
    )
    ref = c.call(getattr(_stub(c), VERBS[a.verb]), req)
    return _job_result(c, a, ref)


def recovered_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(_stub(c).ListRecoveredVms, operator_pb2.VaultRef(vault=a.vault))
    return [to_doc(v) for v in res.vms], lambda rows: table(
        rows, ["id", "name", "kind", "state", "source_name", "point_id", "size", "network", "address"])


def recovered_delete(c: Client, a: argparse.Namespace) -> Any:
    """Refused while its source's lifecycle holds it (test-complete, cancel or failback remove it)."""
    c.call(_stub(c).DeleteRecoveredVm, failover_pb2.RecoveredVmRef(vault=a.vault, vm=a.vm), timeout=600)
    return {"deleted": a.vm}, lambda d: print(f"deleted recovered VM {a.vm} and its disks")


def _plan_printer(d: dict[str, Any]) -> None:
    print(f"plan {d['name']}")
    for g in d.get("groups", []):
        print(f"  group {g['number']}: {', '.join(g.get('vms', [])) or '(no VMs)'}")
        for act in g.get("actions", []):
            what = " ".join(act.get("argv", [])) if act["kind"] == "script" else act.get("instructions", "")
            print(f"    {act['when']:6} {act['kind']:6} {act['name']}: {what}")


def plan_create(c: Client, a: argparse.Namespace) -> Any:
    p = c.call(_stub(c).CreatePlan, failover_pb2.PlanRequest(vault=a.vault, name=a.name, vms=a.vm))
    return to_doc(p), _plan_printer


def plan_show(c: Client, a: argparse.Namespace) -> Any:
    p = c.call(_stub(c).GetPlan, failover_pb2.PlanRef(vault=a.vault, plan=a.name))
    return to_doc(p), _plan_printer


def plan_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(_stub(c).ListPlans, operator_pb2.VaultRef(vault=a.vault))
    docs = [to_doc(p) for p in res.plans]
    return docs, lambda rows: table([{"name": r["name"], "groups": len(r.get("groups", [])),
                                      "vms": sum(len(g.get("vms", [])) for g in r.get("groups", []))}
                                     for r in rows], ["name", "groups", "vms"])


def plan_add_group(c: Client, a: argparse.Namespace) -> Any:
    p = c.call(_stub(c).AddGroup, failover_pb2.PlanGroupRequest(vault=a.vault, plan=a.name, vms=a.vm))
    return to_doc(p), _plan_printer


def plan_add_action(c: Client, a: argparse.Namespace) -> Any:
    kind = "script" if a.script else "manual"
    if bool(a.script) == bool(a.manual):
        raise UsageError("give either --script PROGRAM [--arg A]... or --manual INSTRUCTIONS")
    p = c.call(_stub(c).AddAction, failover_pb2.PlanActionRequest(
        vault=a.vault, plan=a.name, group=a.group, when=a.when, kind=kind, name=a.action_name,
        argv=[a.script, *a.arg] if a.script else [], timeout_seconds=a.script_timeout or 0.0,
        instructions=a.manual or ""))
    return to_doc(p), _plan_printer


def plan_delete(c: Client, a: argparse.Namespace) -> Any:
    c.call(_stub(c).DeletePlan, failover_pb2.PlanRef(vault=a.vault, plan=a.name))
    return {"deleted": a.name}, lambda d: print(f"deleted recovery plan {a.name}")


def job_resume(c: Client, a: argparse.Namespace) -> Any:
    c.call(_stub(c).ResumeJob, operator_pb2.JobRef(vault=a.vault, id=a.id))
    return _job_result(c, a, operator_pb2.JobRef(vault=a.vault, id=a.id))


_waitable = add_wait_options
FAILOVER_HELP = {
    "test": "test failover: a copy in an isolated (or chosen) network; replication goes on",
    "test-complete": "delete the test failover's VMs",
    "planned": "planned failover (no data loss), or failback with --direction to-primary",
    "unplanned": "unplanned failover from the latest (or a chosen) point; fences the primary",
    "commit": "make a failover (or failback) final",
    "cancel": "undo a failover not yet committed: the primary becomes active again",
    "change-point": "re-make the failed-over VM from another point before committing",
    "migrate": "fail over, commit and disable protection",
    "reprotect": "site to site, after commit: keep the primary's copy following the failed-over VM (reverse "
                 "replication), so failback ships only the last changes",
}


def add_parsers(sub: Any, vault_arg: Any) -> None:
    fo = sub.add_parser("failover", help="test, planned and unplanned failover, commit, failback, migration")
    fsub = fo.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for verb in VERBS:
        p = fsub.add_parser(verb, help=FAILOVER_HELP[verb])
        p.add_argument("vm", nargs="?", help="VM name or id")
        p.add_argument("--plan", help="recovery plan instead of one VM")
        vault_arg(p)
        if verb in ("test", "unplanned", "change-point"):
            p.add_argument("--point", default="latest", help="latest, latest-app-consistent or a point id")
        if verb in ("test", "planned", "unplanned", "change-point", "migrate"):
            p.add_argument("--network", default="none" if verb == "test" else "",
                           help="target network (none: isolated, no NIC)")
            p.add_argument("--subnet", help="subnet of --network (default: its first)")
            p.add_argument("--size", help="recovered VM size (default: the smallest that fits the source)")
            add_key_file_option(p)
        if verb == "planned":
            p.add_argument("--direction", default="to-recovery", choices=["to-recovery", "to-primary"],
                           help="to-primary: fail back to the on-premises site")
        if verb == "unplanned":
            p.add_argument("--shutdown-source", action="store_true",
                           help="try to shut the source VM down first (skipped if the site does not answer)")
        _waitable(p)
        p.set_defaults(fn=failover)

    rv = sub.add_parser("recovered-vm", help="VMs made by failover").add_subparsers(dest="sub", required=True,
                                                                                    metavar="COMMAND")
    p = rv.add_parser("list", help="state, size, network and address of each")
    vault_arg(p)
    p.set_defaults(fn=recovered_list)
    p = rv.add_parser("delete", help="delete a recovered VM no failover holds (e.g. left after migration)")
    p.add_argument("vm", help="recovered VM name or id")
    vault_arg(p)
    p.set_defaults(fn=recovered_delete)

    pl = sub.add_parser("plan", help="recovery plans").add_subparsers(dest="sub", required=True, metavar="COMMAND")
    p = pl.add_parser("create", help="a plan whose group 1 holds the VMs given")
    p.add_argument("name", help="plan name")
    p.add_argument("--vm", action="append", default=[], help="VM name or id (repeat)")
    vault_arg(p)
    p.set_defaults(fn=plan_create)
    for verb, fn in (("show", plan_show), ("delete", plan_delete)):
        p = pl.add_parser(verb, help="show a plan's groups and actions" if verb == "show" else "delete a plan")
        p.add_argument("name", help="plan name")
        vault_arg(p)
        p.set_defaults(fn=fn)
    p = pl.add_parser("list", help="the vault's recovery plans")
    vault_arg(p)
    p.set_defaults(fn=plan_list)
    p = pl.add_parser("add-group", help="append a group (booted after the earlier ones)")
    p.add_argument("name", help="plan name")
    p.add_argument("--vm", action="append", default=[], help="VM name or id (repeat)")
    vault_arg(p)
    p.set_defaults(fn=plan_add_group)
    p = pl.add_parser("add-action", help="a script or manual action before or after a group")
    p.add_argument("name", help="plan name")
    p.add_argument("--group", type=int, required=True, help="1-based group number")
    p.add_argument("--when", choices=["before", "after"], required=True, help="before or after the group boots")
    p.add_argument("--action-name", required=True, help="the action's name, shown in the job's tasks")
    p.add_argument("--script", help="program to run (argv[0]; never a shell string)")
    p.add_argument("--arg", action="append", default=[],
                   help="argument of --script (repeat; write --arg=-x for one starting with -)")
    p.add_argument("--script-timeout", type=float, help="seconds (default 300)")
    p.add_argument("--manual", help="instructions shown while the job waits for 'asr job resume'")
    vault_arg(p)
    p.set_defaults(fn=plan_add_action)

    job = sub.choices.get("job")
    if job is None:
        job = sub.add_parser("job", help="jobs")
        job.add_subparsers(dest="sub", required=True, metavar="COMMAND")
    jsub = next(a for a in job._actions if isinstance(a, argparse._SubParsersAction))
    p = jsub.add_parser("resume", help="resume a job waiting (Suspended) at a manual action")
    p.add_argument("id", help="job id")
    vault_arg(p)
    _waitable(p)
    p.set_defaults(fn=job_resume)
