"""asr cloud / vm / job commands."""

from __future__ import annotations

import argparse
from typing import Any

from asrcli.client import Client
from asrcli.jobwait import wait_job
from asrcli.output import show, table, to_doc
from asrclock import iso
from asrerrors import InvalidPolicy, UsageError
from asrpb import inventory_pb2, operator_pb2

FREQUENCIES = {"30s": 30, "5m": 300, "15m": 900}


def _job_result(c: Client, a: argparse.Namespace, ref: operator_pb2.JobRef) -> Any:
    if getattr(a, "wait", False):
        doc = wait_job(c, a.vault, ref.id, a.timeout, a.json)
        return doc, lambda d: print(f"job {ref.id} succeeded")
    return {"job_id": ref.id}, lambda d: print(f"job {ref.id} started; follow it with: asr job wait {ref.id}")


def cloud_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.protection.ListClouds, operator_pb2.VaultRef(vault=a.vault))
    return [to_doc(x) for x in res.clouds], lambda rows: table(rows, ["name", "provider", "hosts", "vms", "protected"])


def cloud_protect(c: Client, a: argparse.Namespace) -> Any:
    if a.copy_frequency not in FREQUENCIES:
        raise InvalidPolicy(f"--copy-frequency {a.copy_frequency!r} is not allowed",
                            causes=("Allowed: 30s, 5m, 15m.",))
    policy = inventory_pb2.Policy(
        storage=a.storage, encrypt=a.encrypt, copy_frequency_seconds=FREQUENCIES[a.copy_frequency],
        retention_hours=a.retention_hours, app_consistent_hours=a.app_consistent_hours, start=a.start,
    )
    ref = c.call(c.protection.ProtectCloud, operator_pb2.ProtectCloudRequest(vault=a.vault, cloud=a.cloud,
                                                                               policy=policy))
    return _job_result(c, a, ref)


def _vm_row(d: dict[str, Any]) -> dict[str, Any]:
    vm = d.get("vm", {})
    return {"name": vm.get("name"), "host": vm.get("host"), "cloud": d.get("cloud"), "power": vm.get("power_state"),
            "protection": d.get("protection_state"), "health": d.get("replication_health") or "-",
            "rpo_s": round(float(d.get("rpo_seconds", 0))) or "-"}


def vm_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.protection.ListVms, operator_pb2.ListVmsRequest(vault=a.vault, cloud=a.cloud or ""))
    docs = [to_doc(v) for v in res.vms]
    return docs, lambda rows: table([_vm_row(r) for r in rows],
                                    ["name", "host", "cloud", "power", "protection", "health", "rpo_s"])


def _mib(n: Any) -> str:
    return f"{int(n or 0) / (1 << 20):,.0f} MiB"


def print_vm(d: dict[str, Any]) -> None:
    """`asr vm show` for people: the VM, its protection, its disks, then anything else."""
    vm = d.get("vm", {})
    pol = d.get("policy") or {}
    lines = {
        "vm": f"{vm.get('name')} ({vm.get('vm_id')})",
        "host / cloud": f"{vm.get('host')} / {d.get('cloud')} (provider {d.get('provider')})",
        "guest": f"{vm.get('guest_os')}, generation {vm.get('generation')}, {vm.get('cpus')} CPU, "
                 f"{vm.get('memory_mb')} MB",
        "power": vm.get("power_state"),
        "protection": f"{d.get('protection_state')}  health {d.get('replication_health') or '-'}",
        "allowed operations": ", ".join(d.get("allowed_operations", [])) or "-",
    }
    if pol:
        lines["policy"] = (f"copy every {pol.get('copy_frequency_seconds')}s, retention {pol.get('retention_hours')}h, "
                           f"app-consistent {pol.get('app_consistent_hours') or 'none'}h, storage "
                           f"{pol.get('storage')}, encryption {'on' if pol.get('encrypt') else 'off'}")
        lines["replication"] = (f"last {iso(float(d.get('last_replication') or 0)) or '-'}, "
                                f"RPO {float(d.get('rpo_seconds') or 0):.0f}s, initial copy "
                                f"{float(d.get('initial_replication_progress') or 0) * 100:.0f}%")
        lines["active location"] = (f"{d.get('active_location') or 'Primary'} (epoch {d.get('epoch', 0)}); "
                                    f"on-premises copy {d.get('primary_copy') or '-'}")
        if d.get("primary_copy_detail"):
            lines["on-premises copy"] = d["primary_copy_detail"]
    show(lines)
    print("disks:")
    for i, disk in enumerate(vm.get("disks", [])):
        kind = "OS  " if disk.get("os_disk") else "data"
        print(f"  {i}  {disk.get('controller'):4}  {kind}  {disk.get('format')}/{disk.get('subformat')}  "
              f"{_mib(disk.get('virtual_size'))}  {disk.get('path')}")
    nics = ", ".join(n.get("mode", "") + (f" {n['address']}" if n.get("address") else "") for n in vm.get("nics", []))
    print(f"nics: {nics or 'none'}")
    for err in d.get("health_errors", []):
        print(f"health error: {err}")
    for r in d.get("recovered_vms", []):
        net = f"{r['address']} in {r.get('network')}/{r.get('subnet')}" if r.get("address") else "no network"
        print(f"recovered VM: {r.get('name')} ({r.get('kind')}, {r.get('state')}), size {r.get('size')}, {net}, "
              f"from point {r.get('point_id') or '-'}")
        for disk in r.get("disks", []):
            print(f"  disk {disk.get('index', 0)}  {_mib(disk.get('virtual_size'))}  {disk.get('path')}")
    known = {"vm", "cloud", "provider", "protection_state", "replication_health", "allowed_operations", "policy",
             "last_replication", "rpo_seconds", "initial_replication_progress", "active_location", "health_errors",
             "recovered_vms", "epoch", "primary_copy", "primary_copy_detail"}
    rest = {k: v for k, v in d.items() if k not in known and v not in ("", [], {}, None, 0, 0.0)}
    if rest:
        show(rest)


def vm_show(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.protection.GetVm, operator_pb2.VmRef(vault=a.vault, vm=a.vm))
    return to_doc(res), print_vm


def vm_protect(c: Client, a: argparse.Namespace) -> Any:
    if a.nic is not None and a.nic < 0:
        raise UsageError(f"--nic {a.nic} is not a NIC index; NICs are counted from 0, like disks")
    nic = a.nic + 1 if a.nic is not None else 0   # the wire counts from 1 (0: none chosen)
    ref = c.call(c.protection.ProtectVm, operator_pb2.ProtectVmRequest(vault=a.vault, vm=a.vm, nic=nic))
    return _job_result(c, a, ref)


def vm_unprotect(c: Client, a: argparse.Namespace) -> Any:
    ref = c.call(c.protection.UnprotectVm, operator_pb2.UnprotectVmRequest(vault=a.vault, vm=a.vm,
                                                                           force=a.force))
    return _job_result(c, a, ref)


def event_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.protection.ListEvents, operator_pb2.EventsRequest(vault=a.vault, vm=a.vm or "",
                                                                     limit=a.limit))
    return [to_doc(e) for e in res.events], lambda rows: table(
        rows, ["at", "severity", "vm_name", "server", "code", "message"], times=("at",))


def job_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.protection.ListJobs, operator_pb2.VaultRef(vault=a.vault))
    return [to_doc(j) for j in res.jobs], lambda rows: table(
        rows, ["id", "kind", "target", "state", "progress", "created_at"], times=("created_at",))


def job_show(c: Client, a: argparse.Namespace) -> Any:
    job = c.call(c.protection.GetJob, operator_pb2.JobRef(vault=a.vault, id=a.id))
    doc = to_doc(job)

    def printer(d: dict[str, Any]) -> None:
        show({k: v for k, v in d.items() if k not in ("tasks", "error")}, ("created_at", "started_at", "ended_at"))
        if d.get("error", {}).get("code"):
            print(f"error  {d['error']['code']}: {d['error']['message']}")
        table(d.get("tasks", []), ["name", "state", "started_at", "ended_at", "output"],
              times=("started_at", "ended_at"))

    return doc, printer


def job_wait(c: Client, a: argparse.Namespace) -> Any:
    doc = wait_job(c, a.vault, a.id, a.timeout, a.json)
    return doc, lambda d: print(f"job {a.id} succeeded")


def _waitable(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="show progress until the job ends; fail if it fails")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most (with --wait)")


def add_parsers(sub: Any, vault_arg: Any) -> None:
    cl = sub.add_parser("cloud", help="VMM clouds synced by providers").add_subparsers(dest="sub", required=True)
    p = cl.add_parser("list")
    vault_arg(p)
    p.set_defaults(fn=cloud_list)
    p = cl.add_parser("protect", help="save a replication policy for a cloud and configure its hosts")
    p.add_argument("cloud")
    vault_arg(p)
    p.add_argument("--storage", required=True, help="target storage account (GRS, the vault's region)")
    p.add_argument("--copy-frequency", default="5m", help="30s, 5m (default) or 15m")
    p.add_argument("--retention-hours", type=int, default=24, help="0 to 24")
    p.add_argument("--app-consistent-hours", type=int, default=0, help="0 (none) or 1 to 12")
    p.add_argument("--start", default="now", help="now, or HH:MM (UTC) on a 30-minute boundary")
    p.add_argument("--encrypt", action="store_true", help="customer-managed encryption (provider must have it)")
    _waitable(p)
    p.set_defaults(fn=cloud_protect)

    vm = sub.add_parser("vm", help="virtual machines").add_subparsers(dest="sub", required=True)
    p = vm.add_parser("list")
    vault_arg(p)
    p.add_argument("--cloud")
    p.set_defaults(fn=vm_list)
    for verb, fn in (("show", vm_show), ("protect", vm_protect), ("unprotect", vm_unprotect)):
        p = vm.add_parser(verb)
        p.add_argument("vm", help="VM name or id")
        vault_arg(p)
        if verb == "protect":
            p.add_argument("--nic", type=int, help="the NIC to replicate when the VM has several, counted from 0")
        if verb == "unprotect":
            p.add_argument("--force", action="store_true",
                           help="the site is gone: disable protection in the vault without waiting for it "
                                "(also releases a VM stuck in a protection job)")
        if verb != "show":
            _waitable(p)
        p.set_defaults(fn=fn)

    ev = sub.add_parser("event", help="the vault's event history").add_subparsers(dest="sub", required=True)
    p = ev.add_parser("list", help="newest first")
    vault_arg(p)
    p.add_argument("--vm", help="only this VM's events (name or id)")
    p.add_argument("--limit", type=int, default=200)
    p.set_defaults(fn=event_list)

    jb = sub.add_parser("job", help="jobs").add_subparsers(dest="sub", required=True)
    p = jb.add_parser("list")
    vault_arg(p)
    p.set_defaults(fn=job_list)
    for verb, fn in (("show", job_show), ("wait", job_wait)):
        p = jb.add_parser(verb)
        p.add_argument("id")
        vault_arg(p)
        if verb == "wait":
            p.add_argument("--timeout", type=float, default=3600.0)
        p.set_defaults(fn=fn)
