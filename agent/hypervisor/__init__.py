"""The project's own ("local") hypervisor: VM definitions, guest writes with change
tracking, and crash- or app-consistent snapshots with copy-on-write."""

from .cli import register_vm_commands, run_vm_command
from .local import LocalHypervisor, disk_spec
from .snapshot import Snapshot
from .tracking import BLOCK_SIZE
from .workload import WorkloadResult, parse_header, plan, run_workload

__all__ = [
    "BLOCK_SIZE",
    "LocalHypervisor",
    "Snapshot",
    "WorkloadResult",
    "disk_spec",
    "parse_header",
    "plan",
    "register_vm_commands",
    "run_vm_command",
    "run_workload",
]
