"""Which VMs can be protected: the rules Site Recovery checks before enabling replication.

:func:`protection_violations` returns every broken rule at once (the operator fixes them all
in one go instead of discovering them one per attempt). Each message names the rule, the
value found and the limit. Disks and NICs are numbered from 0, in the order of the VM's
definition, everywhere (``asr-agent vm show``, ``--disk N``, ``--nic N``); only the wire's
``ProtectionRequest.nic`` counts from 1, so that 0 can mean "none chosen".
"""

from __future__ import annotations

import ipaddress
import re

from asrerrors import InvalidName

from .model import VmSpec

GiB = 2**30
OS_DISK_LIMIT = 127 * GiB
DATA_DISK_LIMIT = 1024 * GiB
MAX_DATA_DISKS = 16

# 64-bit guests only: Azure runs no 32-bit images, so a 32-bit guest could never fail over.
SUPPORTED_GUEST_OS: frozenset[str] = frozenset(
    {
        "windows-server-2012r2",
        "windows-server-2016",
        "windows-server-2019",
        "windows-server-2022",
        "windows-server-2025",
        "windows-10",
        "windows-11",
        "ubuntu-18.04",
        "ubuntu-20.04",
        "ubuntu-22.04",
        "ubuntu-24.04",
        "rhel-7",
        "rhel-8",
        "rhel-9",
        "centos-7",
        "debian-10",
        "debian-11",
        "debian-12",
        "sles-12",
        "sles-15",
        "oracle-linux-7",
        "oracle-linux-8",
    }
)

_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid VM name, or None when it is."""
    if not 1 <= len(name) <= 63:
        return f"name {name!r} has {len(name)} characters; names have 1 to 63"
    if not _NAME.match(name):
        return (
            f"name {name!r} may hold only letters, digits and hyphens, "
            "with no hyphen first or last"
        )
    return None


def validate_name(name: str) -> None:
    problem = name_problem(name)
    if problem is not None:
        raise InvalidName(problem)


def guest_os_problem(guest_os: str) -> str | None:
    """The protection rule on the guest OS, in the words ``asr vm protect`` uses; None when
    ``guest_os`` is supported. The local hypervisor refuses such a VM at creation already."""
    if guest_os in SUPPORTED_GUEST_OS:
        return None
    return (f"guest OS: {guest_os!r} is not a supported 64-bit guest OS "
            f"(supported: {', '.join(sorted(SUPPORTED_GUEST_OS))})")


def _gib(n: int) -> str:
    value = n / GiB
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def protection_violations(vm: VmSpec, chosen_nic: int | None = None) -> list[str]:
    """Every rule ``vm`` breaks; an empty list means the VM can be protected."""
    out: list[str] = []
    problem = name_problem(vm.name)
    if problem is not None:
        out.append(f"name: {problem}")
    if vm.generation != 1:
        out.append(
            f"generation: the VM is generation {vm.generation}; only generation 1 is supported"
        )
    problem = guest_os_problem(vm.guest_os)
    if problem is not None:
        out.append(problem)

    os_disks = [i for i, d in enumerate(vm.disks) if d.os_disk]
    if len(os_disks) != 1:
        out.append(f"OS disk: the VM has {len(os_disks)} OS disks; exactly 1 is required")
    data_count = len(vm.disks) - len(os_disks)
    if data_count > MAX_DATA_DISKS:
        out.append(f"data disks: the VM has {data_count} data disks; at most {MAX_DATA_DISKS}")
    for i, d in enumerate(vm.disks):
        label = f"disk {i} ({d.path})"
        if d.format not in ("vhd", "vhdx"):
            out.append(
                f"{label}: format {d.format!r} is not VHD or VHDX "
                "(pass-through and raw disks cannot be replicated)"
            )
        if d.os_disk:
            if d.controller != "IDE":
                out.append(f"{label}: OS disk is on {d.controller}; the OS disk must be on IDE")
            if d.virtual_size > OS_DISK_LIMIT:
                out.append(
                    f"{label}: {_gib(d.virtual_size)} GiB exceeds the "
                    f"{_gib(OS_DISK_LIMIT)} GiB OS-disk limit"
                )
        else:
            if d.controller not in ("IDE", "SCSI"):
                out.append(f"{label}: controller {d.controller!r} is not IDE or SCSI")
            if d.virtual_size > DATA_DISK_LIMIT:
                out.append(
                    f"{label}: {_gib(d.virtual_size)} GiB exceeds the "
                    f"{_gib(DATA_DISK_LIMIT)} GiB data-disk limit"
                )

    if not vm.nics:
        out.append("network: the VM has no NIC; exactly one NIC with DHCP IPv4 is required")
    elif len(vm.nics) == 1 and chosen_nic is None:
        _check_nic(vm, 0, out)
    elif chosen_nic is None:
        out.append(
            f"network: the VM has {len(vm.nics)} NICs, NIC 0 to NIC {len(vm.nics) - 1}; choose the "
            "one to replicate with --nic N (it must use DHCP IPv4)"
        )
    elif not 0 <= chosen_nic < len(vm.nics):
        out.append(
            f"network: chosen NIC {chosen_nic} does not exist; the VM has {len(vm.nics)} "
            f"(NIC 0 to NIC {len(vm.nics) - 1})"
        )
    else:
        _check_nic(vm, chosen_nic, out)
    return out


def _check_nic(vm: VmSpec, index: int, out: list[str]) -> None:
    nic = vm.nics[index]
    if nic.mode != "dhcp":
        out.append(
            f"network: NIC {index} uses {nic.mode} addressing ({nic.address}); "
            "DHCP IPv4 is required"
        )
    elif nic.address is not None:
        try:
            iface = ipaddress.ip_interface(nic.address)
        except ValueError:
            return
        if iface.version != 4:
            out.append(f"network: NIC {index} has IPv6 address {nic.address}; IPv4 is required")
