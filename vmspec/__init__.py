"""The VM definition shared by agent, provider and cloud, and the rules for protecting a VM."""

from .model import (
    CONTROLLERS,
    DISK_FORMATS,
    DISK_SUBFORMATS,
    NIC_MODES,
    POWER_STATES,
    DiskSpec,
    NicSpec,
    VmSpec,
)
from .rules import (
    DATA_DISK_LIMIT,
    MAX_DATA_DISKS,
    OS_DISK_LIMIT,
    SUPPORTED_GUEST_OS,
    guest_os_problem,
    name_problem,
    protection_violations,
    validate_name,
)

__all__ = [
    "CONTROLLERS",
    "DATA_DISK_LIMIT",
    "DISK_FORMATS",
    "DISK_SUBFORMATS",
    "MAX_DATA_DISKS",
    "NIC_MODES",
    "OS_DISK_LIMIT",
    "POWER_STATES",
    "SUPPORTED_GUEST_OS",
    "DiskSpec",
    "NicSpec",
    "VmSpec",
    "guest_os_problem",
    "name_problem",
    "protection_violations",
    "validate_name",
]
