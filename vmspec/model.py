"""The VM definition as it crosses the wire: a VM, its disks and its NICs.

Every class converts to and from a JSON-safe ``dict`` (``to_dict``/``from_dict``); the agent,
the provider and the cloud all exchange VMs in this shape. ``from_dict`` checks types and the
enumerated values so a malformed message fails loudly instead of half-parsing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from asrerrors import ValidationFailed

CONTROLLERS = ("IDE", "SCSI")
DISK_FORMATS = ("raw", "vhd", "vhdx")
DISK_SUBFORMATS = ("fixed", "dynamic", "differencing", "")
NIC_MODES = ("dhcp", "static")
POWER_STATES = ("Running", "Off")


def _get(d: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in d:
        raise ValidationFailed(f"{what}: missing field {key!r}")
    value = d[key]
    # bool is an int in Python; an int field given true/false is still malformed
    if isinstance(value, bool) and kind is int:
        raise ValidationFailed(f"{what}: field {key!r} must be an integer, not {value!r}")
    if not isinstance(value, kind):
        raise ValidationFailed(f"{what}: field {key!r} has the wrong type ({value!r})")
    return value


def _choice(value: str, allowed: tuple[str, ...], key: str, what: str) -> str:
    if value not in allowed:
        raise ValidationFailed(f"{what}: {key} {value!r} is not one of {', '.join(allowed)}")
    return value


@dataclass
class DiskSpec:
    path: str
    controller: str
    os_disk: bool
    format: str
    subformat: str
    virtual_size: int
    parent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "controller": self.controller,
            "os_disk": self.os_disk,
            "format": self.format,
            "subformat": self.subformat,
            "virtual_size": self.virtual_size,
            "parent": self.parent,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiskSpec:
        what = "disk"
        parent = d.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise ValidationFailed(f"{what}: field 'parent' must be a path or null")
        return cls(
            path=_get(d, "path", str, what),
            controller=_choice(_get(d, "controller", str, what), CONTROLLERS, "controller", what),
            os_disk=_get(d, "os_disk", bool, what),
            format=_choice(_get(d, "format", str, what), DISK_FORMATS, "format", what),
            subformat=_choice(_get(d, "subformat", str, what), DISK_SUBFORMATS, "subformat", what),
            virtual_size=_get(d, "virtual_size", int, what),
            parent=parent,
        )


@dataclass
class NicSpec:
    mode: str
    address: str | None = None  # IP/PREFIX for static NICs
    # The VMM VM network the NIC connects to ("" none); site to site maps it to a network of
    # the recovery cloud. Definitions written before it existed have none.
    network: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "address": self.address, "network": self.network}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NicSpec:
        address = d.get("address")
        if address is not None and not isinstance(address, str):
            raise ValidationFailed("nic: field 'address' must be IP/PREFIX or null")
        network = d.get("network") or ""
        if not isinstance(network, str):
            raise ValidationFailed("nic: field 'network' must be a network name or null")
        return cls(mode=_choice(_get(d, "mode", str, "nic"), NIC_MODES, "mode", "nic"),
                   address=address, network=network)


@dataclass
class VmSpec:
    name: str
    generation: int
    cpus: int
    memory_mb: int
    guest_os: str
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    power_state: str = "Off"
    vm_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    app_quiesce_hook: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "generation": self.generation,
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "guest_os": self.guest_os,
            "disks": [d.to_dict() for d in self.disks],
            "nics": [n.to_dict() for n in self.nics],
            "power_state": self.power_state,
            "vm_id": self.vm_id,
            "app_quiesce_hook": list(self.app_quiesce_hook) if self.app_quiesce_hook else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VmSpec:
        what = "vm"
        if not isinstance(d, dict):
            raise ValidationFailed("vm: the definition must be a JSON object")
        hook = d.get("app_quiesce_hook")
        if hook is not None and not (
            isinstance(hook, list) and hook and all(isinstance(a, str) for a in hook)
        ):
            raise ValidationFailed("vm: app_quiesce_hook must be a non-empty argv list or null")
        vm_id = d.get("vm_id") or str(uuid.uuid4())
        try:
            vm_id = str(uuid.UUID(str(vm_id)))
        except ValueError as exc:
            raise ValidationFailed(f"vm: vm_id {vm_id!r} is not a UUID") from exc
        return cls(
            name=_get(d, "name", str, what),
            generation=_get(d, "generation", int, what),
            cpus=_get(d, "cpus", int, what),
            memory_mb=_get(d, "memory_mb", int, what),
            guest_os=_get(d, "guest_os", str, what),
            disks=[DiskSpec.from_dict(x) for x in _get(d, "disks", list, what)],
            nics=[NicSpec.from_dict(x) for x in _get(d, "nics", list, what)],
            power_state=_choice(d.get("power_state", "Off"), POWER_STATES, "power_state", what),
            vm_id=vm_id,
            app_quiesce_hook=list(hook) if hook else None,
        )
