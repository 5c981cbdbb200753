"""asr-provider vm …: the VMM console's path to protection (VMM can enable protection for a
VM itself, without the portal)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from asrclock import from_environment
from asrerrors import UsageError
from asrpb import control_pb2
from provider.config import load
from provider.store import ProviderStore
from registration.link import CloudLink
from registration.state import load as load_identity


def _protect(args: argparse.Namespace, disable: bool) -> int:
    if args.nic is not None and args.nic < 0:
        raise UsageError(f"--nic {args.nic} is not a NIC index; NICs are numbered from 0, as "
                         "'asr-agent vm show' lists them")
    cfg = load(args.config)
    # the wire counts from 1 so that 0 can mean "none chosen" (ProtectionRequest.nic)
    nic = args.nic + 1 if args.nic is not None else 0
    link = CloudLink(load_identity(cfg.state_dir), from_environment(), cfg.proxy)
    try:
        reply = link.call(link.site.RequestProtection,
                          control_pb2.ProtectionRequest(vm_name=args.name, nic=nic, disable=disable))
    finally:
        link.close()
    job_id = getattr(reply, "job_id", "")
    print(json.dumps({"job_id": job_id}) if args.json else f"job {job_id} started")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    store = ProviderStore(cfg.state_dir)
    rows = []
    for cloud in cfg.clouds:
        for host in cloud.hosts:
            got = store.inventory(host)
            for vm in got[0].vms if got else []:
                rows.append({"name": vm.name, "vm_id": vm.vm_id, "host": host, "cloud": cloud.name,
                             "synced": cloud.sync, "power_state": vm.power_state})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:24} {r['host']:12} {r['cloud']:12} {r['power_state']}")
    return 0


def add_parsers(sub: Any) -> None:
    vm = sub.add_parser("vm", help="VMs as this VMM server sees them").add_subparsers(dest="sub", required=True)
    p = vm.add_parser("list")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)
    for verb, disable in (("protect", False), ("unprotect", True)):
        p = vm.add_parser(verb, help=f"{verb} a VM from the VMM side")
        p.add_argument("name")
        p.add_argument("--config", required=True)
        p.add_argument("--nic", type=int, metavar="N",
                       help="the NIC to replicate when the VM has several, numbered from 0 "
                            "(as 'asr-agent vm show' lists them, like --disk N)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(fn=lambda a, d=disable: _protect(a, d))
