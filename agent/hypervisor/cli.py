"""The ``vm`` command group of ``asr-agent``: the local hypervisor from the command line.

``register_vm_commands(subparsers)`` adds the group to the agent's argparse parser and
``run_vm_command(args)`` runs a parsed command, printing errors with ``err.render()`` and
returning the error's exit code. ``python -m agent.hypervisor.cli vm ...`` runs it alone.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sys
from pathlib import Path
from typing import Any

from asrerrors import AsrError, UsageError, ValidationFailed
from vmspec import NicSpec, VmSpec

from .fence import describe
from .local import LocalHypervisor
from .workload import run_workload


def _byte(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte value") from exc
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 255")
    return value


def _nic(text: str) -> NicSpec:
    """``dhcp`` or ``IP/PREFIX``, optionally ``@NETWORK``: the VM network the NIC connects to."""
    addressing, sep, network = text.partition("@")
    if sep and not network.strip():
        raise argparse.ArgumentTypeError(f"{text!r} names no network after '@' (e.g. dhcp@corp)")
    network = network.strip()
    if addressing.lower() == "dhcp":
        return NicSpec("dhcp", network=network)
    try:
        iface = ipaddress.ip_interface(addressing)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'dhcp' or IP/PREFIX (optionally @NETWORK)") from exc
    if "/" not in addressing:
        raise argparse.ArgumentTypeError(f"{text!r} needs a prefix length (IP/PREFIX)")
    return NicSpec("static", str(iface), network=network)


def register_vm_commands(subparsers: Any) -> None:
    vm = subparsers.add_parser("vm", help="VMs of the local hypervisor")
    sub = vm.add_subparsers(dest="vm_command", required=True)

    def add(name: str, help_text: str, with_name: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        if with_name:
            p.add_argument("name")
        p.add_argument("--config", required=True, help="agent TOML configuration file")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = add("create", "define a VM over existing disk images")
    p.add_argument("--os-disk", required=True)
    p.add_argument("--data-disk", action="append", default=[])
    p.add_argument("--os", dest="guest_os", required=True)
    p.add_argument("--generation", type=int, choices=(1, 2), default=1)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--memory-mb", type=int, default=2048)
    p.add_argument("--nic", type=_nic, action="append", default=None,
                   help="dhcp or IP/PREFIX, optionally @NETWORK (the VM network, e.g. dhcp@corp), once per "
                        "NIC; NICs are numbered from 0 in this order")
    p.add_argument("--data-controller", choices=("IDE", "SCSI"), default="SCSI")
    p.add_argument("--os-controller", choices=("IDE", "SCSI"), default="IDE")
    p.add_argument("--quiesce-hook", nargs="+", default=None, help="argv run before "
                   "app-consistent snapshots")

    p = add("import", "register a VM from a definition JSON file", with_name=False)
    p.add_argument("file")
    add("list", "list VMs", with_name=False)
    for name in ("show", "start", "stop", "delete"):
        add(name, f"{name} a VM")
    p = add("unfence", "local override: make a fenced (stale) VM writable again, when the vault side "
                       "was retired for good")
    p.add_argument("--force", action="store_true",
                   help="really unfence (without it the command only explains); also drops the VM's "
                        "replication settings on this host")

    p = add("write", "write a byte pattern through the guest write path")
    p.add_argument("--disk", type=int, required=True)
    p.add_argument("--offset", type=int, required=True)
    p.add_argument("--length", type=int, required=True)
    p.add_argument("--pattern", type=_byte, required=True)

    p = add("workload", "run a synthetic guest workload")
    p.add_argument("--rate", type=float, required=True, help="MB/s")
    p.add_argument("--block-size", type=int, default=4096)
    p.add_argument("--duration", type=float, default=10.0, help="seconds")
    p.add_argument("--pattern", choices=("random", "sequential"), default="random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sequence-numbers", action="store_true")
    p.add_argument("--max-writes", type=int, default=None)


def vm_dir_from_config(config: str) -> str:
    """The VM directory the agent's configuration names (the whole file is validated)."""
    from agent.config import load

    return str(Path(load(config).vm_dir).resolve())


def _vm_view(hv: LocalHypervisor, vm: VmSpec) -> dict[str, Any]:
    view = vm.to_dict()
    view["tracking"] = hv.tracking_state(vm.name)
    view["fenced"] = hv.fenced(vm.name)
    return view


def _print_vm(hv: LocalHypervisor, vm: VmSpec) -> None:
    print(f"{vm.name}  {vm.power_state}  gen{vm.generation}  {vm.cpus} CPU  "
          f"{vm.memory_mb} MB  {vm.guest_os}  id {vm.vm_id}")
    for i, d in enumerate(vm.disks):
        kind = f"{d.format}/{d.subformat}" if d.subformat else d.format
        role = "OS" if d.os_disk else "data"
        print(f"  disk {i}: {d.path}  {kind}  {d.virtual_size} bytes  {d.controller}  {role}")
    for i, n in enumerate(vm.nics):
        network = f" network {n.network}" if n.network else ""
        print(f"  nic {i}: {n.mode}{' ' + n.address if n.address else ''}{network}")
    marker = hv.fenced(vm.name)
    if marker is not None:
        print(f"  FENCED: {describe(vm.name, marker)}")
        print("  it may not start or take guest writes here; fail back to make this host the active side "
              "again (asr failover planned VM --direction to-primary)")


def _unfence(hv: LocalHypervisor, args: argparse.Namespace) -> dict[str, Any]:
    """The operator's local override: this host's copy becomes writable again."""
    from agent.config import load
    from agent.settings import Settings

    vm = hv.get(args.name)
    marker = hv.fenced(vm.name)
    if marker is None:
        return {"vm": vm.name, "fenced": False}
    if not args.force:
        raise UsageError(
            f"{describe(vm.name, marker)}. Unfencing lets this copy start and take writes while the vault "
            "may hold, or run, the VM's active copy elsewhere: the two would diverge, and this host's "
            "writes would never reach the vault.",
            action=(f"Fail back instead (asr failover planned {vm.name} --direction to-primary): it makes this "
                    "host the active side again. Only if the vault side was retired for good, run "
                    f"'asr-agent vm unfence {vm.name} --config FILE --force'."))
    hv.unfence(vm.name)
    settings = Settings(load(args.config).state_dir)
    had_settings = settings.get(vm.vm_id) is not None
    settings.disable(vm.vm_id)
    print(f"warning: VM {vm.name} was unfenced by a local override ({marker.get('reason', '?')}). This copy "
          "may now start and take writes; it is no longer replicated from this host"
          f"{' (its replication settings were removed)' if had_settings else ''}. Protect it again to "
          "replicate it.", file=sys.stderr)
    return {"vm": vm.name, "fenced": False, "unfenced": True, "replication_settings_removed": had_settings}


def _execute(hv: LocalHypervisor, args: argparse.Namespace) -> Any:
    cmd = args.vm_command
    if cmd == "create":
        vm = hv.create(
            args.name, args.os_disk, args.data_disk, guest_os=args.guest_os,
            generation=args.generation, cpus=args.cpus, memory_mb=args.memory_mb,
            nics=args.nic, os_controller=args.os_controller,
            data_controller=args.data_controller, app_quiesce_hook=args.quiesce_hook,
        )
        return vm
    if cmd == "import":
        return hv.import_vm(args.file)
    if cmd == "list":
        return hv.list()
    if cmd == "show":
        return hv.get(args.name)
    if cmd == "start":
        return hv.start(args.name)
    if cmd == "stop":
        return hv.stop(args.name)
    if cmd == "delete":
        hv.delete(args.name)
        return {"deleted": args.name}
    if cmd == "unfence":
        return _unfence(hv, args)
    if cmd == "write":
        hv.write_pattern(args.name, args.disk, args.offset, args.length, args.pattern)
        return {"vm": args.name, "disk": args.disk, "offset": args.offset,
                "length": args.length}
    if cmd == "workload":
        r = run_workload(
            hv, args.name, args.rate, block_size=args.block_size, pattern=args.pattern,
            duration_s=args.duration, seed=args.seed,
            sequence_numbers=args.sequence_numbers, max_writes=args.max_writes,
        )
        return {"vm": args.name, "writes": r.writes, "bytes": r.bytes_written,
                "seconds": round(r.seconds, 3)}
    raise UsageError(f"unknown vm command {cmd!r}")


def run_vm_command(args: argparse.Namespace) -> int:
    # the adapter logs a broken definition for the daemon's log; this command reports it
    # itself (below), so Python's last-resort handler must not print it a second time
    logging.getLogger("agent.hypervisor.local").addHandler(logging.NullHandler())
    try:
        hv = LocalHypervisor(vm_dir_from_config(args.config))
        try:
            result = _execute(hv, args)
            if args.json:
                if isinstance(result, VmSpec):
                    out: Any = _vm_view(hv, result)
                elif isinstance(result, list):
                    out = [vm.to_dict() | {"fenced": hv.fenced(vm.name)} for vm in result]
                else:
                    out = result
                print(json.dumps(out, indent=2))
            elif isinstance(result, VmSpec):
                _print_vm(hv, result)
            elif isinstance(result, list):
                for vm in result:
                    fenced = "  FENCED" if hv.fenced(vm.name) else ""
                    print(f"{vm.name}  {vm.power_state}  {len(vm.disks)} disks  {vm.guest_os}{fenced}")
            else:
                print("  ".join(f"{k}={v}" for k, v in result.items()))
            if args.vm_command == "list" and hv.broken:
                # listed without them; still an error for whoever runs this (and scripts)
                err = ValidationFailed(f"{len(hv.broken)} VM definition(s) are broken and were left out",
                                       details=tuple(m if str(f) in m else f"{f}: {m}"
                                                     for f, m in sorted(hv.broken.items())),
                                       action="Correct or remove each file named above.")
                print(err.render(), file=sys.stderr)
                return err.exit_code
            return 0
        finally:
            hv.close()
    except AsrError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr-agent")
    register_vm_commands(parser.add_subparsers(dest="command", required=True))
    return run_vm_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
