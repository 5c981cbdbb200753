"""asr cloud / vm / job commands."""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from asrcli.client import Client
from asrcli.jobwait import add_wait_options, wait_job
from asrcli.jobwait import job_result as _job_result
from asrcli.output import human_bytes, percent, show, table, time_cell, to_doc
from asrclock import from_iso
from asrerrors import InvalidPolicy, UsageError
from asrpb import inventory_pb2, operator_pb2
from chunkfmt import COMPRESSION, DEFAULT_COMPRESSION

FREQUENCIES = {"30s": 30, "5m": 300, "15m": 900}
JOB_STATES = ("NotStarted", "InProgress", "Succeeded", "Failed", "Cancelled", "Suspended")
SEVERITIES = ("info", "warning", "critical")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _cloud_row(d: dict[str, Any]) -> dict[str, Any]:
    pol = d.get("policy") or {}
    target = (f"cloud {pol['target_cloud']}" if pol.get("target_cloud") else
              f"storage {pol['storage']}" if pol.get("storage") else "-")
    replica = [f"{h['name']} {h['replica_address']} ({human_bytes(h['replica_free_bytes'])} free)"
               for h in d.get("host_details", []) if h.get("replica_address")]
    return {**d, "target": target if d.get("protected") else "-", "networks": d.get("networks") or "-",
            "replica_hosts": "; ".join(replica) or "-"}


def cloud_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.protection.ListClouds, operator_pb2.VaultRef(vault=a.vault))
    return [to_doc(x) for x in res.clouds], lambda rows: table(
        [_cloud_row(r) for r in rows], ["name", "provider", "hosts", "vms", "protected", "target", "networks",
                                        "replica_hosts"])


def cloud_protect(c: Client, a: argparse.Namespace) -> Any:
    if a.copy_frequency not in FREQUENCIES:
        raise InvalidPolicy(f"--copy-frequency {a.copy_frequency!r} is not allowed",
                            causes=("Allowed: 30s, 5m, 15m.",))
    if bool(a.storage) == bool(a.target_cloud):
        raise UsageError(f"name {'only one of' if a.storage else 'one of'} --storage (replicate to the vault) and "
                         "--target-cloud (site to site: to a VMM cloud of another provider)")
    policy = inventory_pb2.Policy(
        storage=a.storage or "", target_cloud=a.target_cloud or "", encrypt=a.encrypt,
        copy_frequency_seconds=FREQUENCIES[a.copy_frequency],
        retention_hours=a.retention_hours, app_consistent_hours=a.app_consistent_hours, start=a.start,
        compression=a.compression,   # checked by the cloud (InvalidPolicy, naming the allowed values)
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
    return human_bytes(n)


def policy_text(pol: dict[str, Any]) -> str:
    """A policy for people: "copy every 300s, retention 24h, app-consistent every 4h" (or none)."""
    app = pol.get("app_consistent_hours") or 0
    target = f"recovery cloud {pol['target_cloud']}" if pol.get("target_cloud") else f"storage {pol.get('storage')}"
    return (f"copy every {pol.get('copy_frequency_seconds')}s, retention {pol.get('retention_hours')}h, "
            f"app-consistent {f'every {app}h' if app else 'none'}, "
            f"{target}, "
            f"encryption {'on' if pol.get('encrypt') else 'off'}, "
            f"compression {pol.get('compression') or DEFAULT_COMPRESSION}")


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
        lines["policy"] = policy_text(pol)
        lines["replication"] = (f"last {time_cell(d.get('last_replication'))}, "
                                f"RPO {float(d.get('rpo_seconds') or 0):.0f}s, initial copy "
                                f"{percent(d.get('initial_replication_progress'))}")
        lines["active location"] = (f"{d.get('active_location') or 'Primary'} (epoch {d.get('epoch', 0)}); "
                                    f"on-premises copy {d.get('primary_copy') or '-'}")
        if d.get("primary_copy_detail"):
            lines["on-premises copy"] = d["primary_copy_detail"]
    if d.get("recovery_host"):
        lines["recovery"] = (f"host {d['recovery_host']} of cloud {d.get('recovery_cloud')} (site to site, pairing "
                             f"{d.get('pairing_id')})")
        if d.get("active_location") == "Recovery":
            lines["runs on"] = (f"recovery host {d['recovery_host']} (failed over; its VM there has this VM's name, "
                                "a test VM the name with -test)")
        if d.get("protection_state") == "ReverseProtected":
            last = (f"last sync {time_cell(d.get('reverse_synced_at'))} ({d.get('reverse_blocks', 0)} blocks)"
                    if d.get("reverse_synced_at") else "no sync reported yet")
            err = f"; last error: {d['reverse_error']}" if d.get("reverse_error") else ""
            lines["reverse"] = (f"{vm.get('host')} follows the VM on {d['recovery_host']} (re-protected), {last}{err}; "
                                "failback ships only what changed since")
        lines["replica"] = (f"health {d.get('replication_health') or '-'}, {d.get('replica_points', 0)} points, RPO "
                            f"{float(d.get('rpo_seconds') or 0):.0f}s, last report "
                            f"{time_cell(d.get('last_replica_report_at'))}, "
                            f"{human_bytes(d.get('replica_free_bytes'))} free on the recovery host")
    show(lines)
    print("disks:")
    for i, disk in enumerate(vm.get("disks", [])):
        kind = "OS  " if disk.get("os_disk") else "data"
        print(f"  {i}  {disk.get('controller'):4}  {kind}  {disk.get('format')}/{disk.get('subformat')}  "
              f"{_mib(disk.get('virtual_size'))}  {disk.get('path')}")
    nics = ", ".join(n.get("mode", "") + (f" {n['address']}" if n.get("address") else "")
                     + (f" network {n['network']}" if n.get("network") else "") for n in vm.get("nics", []))
    print(f"nics: {nics or 'none'}")
    for err in d.get("health_errors", []):
        print(f"health error: {err}")
    for r in d.get("recovered_vms", []):
        net = f"{r['address']} in {r.get('network')}/{r.get('subnet')}" if r.get("address") else "no network"
        print(f"recovered VM: {r.get('name')} ({r.get('kind')}, {r.get('state')}), size {r.get('size')}, {net}, "
              f"from point {r.get('point_id') or '-'}")
        for disk in r.get("disks", []):
            print(f"  disk {disk.get('index', 0)}  {_mib(disk.get('virtual_size'))}  {disk.get('path')}")
    events = d.get("latest_events", [])
    if events:
        print("latest events:")
        for e in events:
            print(f"  {time_cell(e.get('at'))}  {e.get('severity'):8}  {e.get('code')}  {e.get('message')}")
    known = {"latest_events",
             "vm", "cloud", "provider", "protection_state", "replication_health", "allowed_operations", "policy",
             "last_replication", "rpo_seconds", "initial_replication_progress", "active_location", "health_errors",
             "recovered_vms", "epoch", "primary_copy", "primary_copy_detail", "recovery_cloud", "recovery_host",
             "pairing_id", "replica_free_bytes", "last_replica_report_at", "replica_points", "reverse_synced_at",
             "reverse_blocks", "reverse_error"}
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
    ref = c.call(c.protection.ProtectVm, operator_pb2.ProtectVmRequest(vault=a.vault, vm=a.vm, nic=nic,
                                                                       recovery_host=a.recovery_host or ""))
    return _job_result(c, a, ref)


def vm_unprotect(c: Client, a: argparse.Namespace) -> Any:
    ref = c.call(c.protection.UnprotectVm, operator_pb2.UnprotectVmRequest(vault=a.vault, vm=a.vm,
                                                                           force=a.force))
    return _job_result(c, a, ref)


def since_time(text: str, now: float) -> float:
    """--since: an ISO-8601 time (UTC unless it names a zone) or a duration back from now:
    a number and a unit, s m h d w, e.g. 90m, 1h, 7d."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return from_iso(text)
    except ValueError:
        raise UsageError(f"--since {text!r} is neither an ISO-8601 time nor a duration",
                         action="Pass e.g. --since 2026-11-30T09:00:00Z, --since 2026-11-30, or --since 1h "
                                "(units s, m, h, d, w).") from None


def _positive(what: str) -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, not {text!r}") from None
        if not 1 <= n <= 10000:
            raise argparse.ArgumentTypeError(f"{what} must be from 1 to 10000, not {n}")
        return n
    return parse


def event_list(c: Client, a: argparse.Namespace) -> Any:
    since = since_time(a.since, time.time()) if a.since else 0.0
    res = c.call(c.protection.ListEvents, operator_pb2.EventsRequest(
        vault=a.vault, vm=a.vm or "", limit=a.limit, server=a.server or "", since=since,
        severity=a.severity or ""))
    return [to_doc(e) for e in res.events], lambda rows: table(
        rows, ["at", "severity", "vm_name", "server", "code", "message"], times=("at",))


def job_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.protection.ListJobs, operator_pb2.ListJobsRequest(
        vault=a.vault, state=a.state or "", kind=a.kind or "", vm=a.vm or "", limit=a.limit))
    return [to_doc(j) for j in res.jobs], lambda rows: table(
        rows, ["id", "kind", "target", "state", "progress", "created_at"], times=("created_at",),
        formats={"progress": percent})


def job_show(c: Client, a: argparse.Namespace) -> Any:
    job = c.call(c.protection.GetJob, operator_pb2.JobRef(vault=a.vault, id=a.id))
    doc = to_doc(job)

    def printer(d: dict[str, Any]) -> None:
        head = {k: v for k, v in d.items() if k not in ("tasks", "error", "bytes_done", "bytes_total")}
        head["progress"] = percent(d.get("progress"))
        if d.get("bytes_total"):
            head["data"] = f"{human_bytes(d['bytes_done'])} of {human_bytes(d['bytes_total'])}"
        show(head, ("created_at", "started_at", "ended_at"))
        if d.get("error", {}).get("code"):
            print(f"error  {d['error']['code']}: {d['error']['message']}")
        table(d.get("tasks", []), ["name", "state", "started_at", "ended_at", "output"],
              times=("started_at", "ended_at"))

    return doc, printer


def job_wait(c: Client, a: argparse.Namespace) -> Any:
    doc = wait_job(c, a, a.id)
    return doc, lambda d: print(f"job {a.id} succeeded")


_waitable = add_wait_options


def add_parsers(sub: Any, vault_arg: Any) -> None:
    cl = sub.add_parser("cloud", help="VMM clouds synced by providers").add_subparsers(dest="sub", required=True,
                                                                                      metavar="COMMAND")
    p = cl.add_parser("list", help="the clouds providers synced, and whether a policy protects them")
    vault_arg(p)
    p.set_defaults(fn=cloud_list)
    p = cl.add_parser("protect", help="save a replication policy for a cloud and configure its hosts")
    p.add_argument("cloud", help="VMM cloud name")
    vault_arg(p)
    target = p.add_mutually_exclusive_group()
    target.add_argument("--storage", help="target storage account (GRS, the vault's region)")
    target.add_argument("--target-cloud", help="site to site: the recovery VMM cloud, of another provider of the "
                                               "vault, with a host that holds replicas")
    p.add_argument("--copy-frequency", default="5m", help="30s, 5m (default) or 15m")
    p.add_argument("--retention-hours", type=int, default=24, help="0 to 24 (default 24)")
    p.add_argument("--app-consistent-hours", type=int, default=0, help="0 (none, the default) or 1 to 12")
    p.add_argument("--start", default="now", help="now, or HH:MM (UTC) on a 30-minute boundary")
    p.add_argument("--encrypt", action="store_true", help="customer-managed encryption (provider must have it)")
    p.add_argument("--compression", default=DEFAULT_COMPRESSION, metavar="|".join(COMPRESSION),
                   help="how the hosts compress new blocks: fast (zstd level -1 per 64 KiB block: the least "
                        "CPU, for hosts short of it), balanced (the default: up to 32 new blocks compressed "
                        "together at zstd level 2, ~14%% fewer bytes sent and stored than one block at a time) or "
                        "strong (up to 64 blocks together at zstd level 3: ~6%% fewer bytes again for ~1.5x the "
                        "compression CPU); an encrypted VM's blocks are compressed one at a time under both")
    _waitable(p)
    p.set_defaults(fn=cloud_protect)

    vm = sub.add_parser("vm", help="virtual machines").add_subparsers(dest="sub", required=True, metavar="COMMAND")
    p = vm.add_parser("list", help="VMs of the vault's inventory with protection state and health")
    vault_arg(p)
    p.add_argument("--cloud", help="only this VMM cloud's VMs")
    p.set_defaults(fn=vm_list)
    helps = {"show": "one VM: protection, health, allowed operations, RPO, latest events",
             "protect": "enable protection (validated against every rule first)",
             "unprotect": "disable protection; its recovery points are deleted"}
    for verb, fn in (("show", vm_show), ("protect", vm_protect), ("unprotect", vm_unprotect)):
        p = vm.add_parser(verb, help=helps[verb])
        p.add_argument("vm", help="VM name or id")
        vault_arg(p)
        if verb == "protect":
            p.add_argument("--nic", type=int, help="the NIC to replicate when the VM has several, counted from 0")
            p.add_argument("--recovery-host", help="site to site: the recovery host (of the recovery cloud, holding "
                                                   "replicas); default: the one with the most free space")
        if verb == "unprotect":
            p.add_argument("--force", action="store_true",
                           help="the site is gone: disable protection in the vault without waiting for it "
                                "(also releases a VM stuck in a protection job)")
        if verb != "show":
            _waitable(p)
        p.set_defaults(fn=fn)

    ev = sub.add_parser("event", help="the vault's event history").add_subparsers(dest="sub", required=True,
                                                                                   metavar="COMMAND")
    p = ev.add_parser("list", help="newest first")
    vault_arg(p)
    p.add_argument("--vm", help="only this VM's events (name or id)")
    p.add_argument("--server", help="only this server's events: NAME, provider/NAME or agent/NAME")
    p.add_argument("--since", help="only events at or after: an ISO-8601 time (UTC unless zoned) or a duration "
                                   "back from now, e.g. 1h, 30m, 7d")
    p.add_argument("--severity", choices=SEVERITIES, type=str.lower,
                   help="only events of this severity and worse (warning: warnings and critical ones)")
    p.add_argument("--limit", type=_positive("--limit"), default=200, help="at most this many (1-10000, default 200)")
    p.set_defaults(fn=event_list)

    jb = sub.add_parser("job", help="jobs").add_subparsers(dest="sub", required=True, metavar="COMMAND")
    p = jb.add_parser("list", help="newest first")
    vault_arg(p)
    p.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    p.add_argument("--kind", help="only jobs of this kind, e.g. EnableProtection, TestFailover")
    p.add_argument("--vm", help="only jobs whose target is this VM (name or id)")
    p.add_argument("--limit", type=_positive("--limit"), default=200, help="at most this many (1-10000, default 200)")
    p.set_defaults(fn=job_list)
    p = jb.add_parser("show", help="one job with its tasks")
    p.add_argument("id", help="job id")
    vault_arg(p)
    p.set_defaults(fn=job_show)
    p = jb.add_parser("wait", help="show a job's progress until it ends; fail if it fails")
    p.add_argument("id", help="job id")
    vault_arg(p)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most (default 3600)")
    p.set_defaults(fn=job_wait)
