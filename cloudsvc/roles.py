"""Operator roles, as Azure Site Recovery has them, and the one table saying which role each
operator method needs. The gRPC API (``Registrar.check_caller``, for operator certificates)
and the portal (for signed-in operators) both ask :func:`require`, so a Reader refused by one
is refused by the other with the same error.

=============  ==============================================================================
Reader         sees everything (every List/Get/Report/Verify), changes nothing
Operator       a Reader who may also fail over (test, planned, unplanned, commit, cancel,
               change point, test-complete, re-protect) and resume jobs
Contributor    everything, creating operators included (``asr-cloudsvc init``'s credential)
=============  ==============================================================================

A method missing from :data:`MINIMUM` needs Contributor: a new method is closed by default.
"""

from __future__ import annotations

from enum import StrEnum

from asrerrors import PermissionDenied, UsageError


class Role(StrEnum):
    READER = "Reader"
    OPERATOR = "Operator"
    CONTRIBUTOR = "Contributor"


RANK = {Role.READER: 0, Role.OPERATOR: 1, Role.CONTRIBUTOR: 2}

_READ = {
    "Operator": ("ListRegions", "ListVaults", "GetVault", "ListStorage", "ListNetworks", "ListServers"),
    "Protection": ("ListClouds", "ListVms", "GetVm", "ListJobs", "GetJob", "ListEvents", "ListNetworkMappings"),
    "Billing": ("Report",),
    "Failover": ("ListRecoveredVms", "GetPlan", "ListPlans"),
    "Points": ("ListPoints", "VerifyPoint"),
}
_FAIL_OVER = {
    "Failover": ("TestFailover", "TestFailoverComplete", "PlannedFailover", "UnplannedFailover", "Commit",
                 "Cancel", "ChangePoint", "Reprotect", "ResumeJob"),
}


def _table() -> dict[str, Role]:
    out: dict[str, Role] = {}
    for role, methods in ((Role.READER, _READ), (Role.OPERATOR, _FAIL_OVER)):
        for service, names in methods.items():
            out.update({f"/asr.v1.{service}/{n}": role for n in names})
    return out


# Full gRPC method name -> the least role that may call it (absent: Contributor).
MINIMUM: dict[str, Role] = _table()


def parse(text: str) -> Role:
    """A role from its name, any case; UsageError naming the allowed ones otherwise."""
    for r in Role:
        if text.lower() == r.value.lower():
            return r
    raise UsageError(f"role {text!r} is unknown", causes=("Roles: Reader, Operator, Contributor.",),
                     action="Pass --role Reader, Operator or Contributor.")


def minimum(method: str) -> Role:
    return MINIMUM.get(method, Role.CONTRIBUTOR)


def allows(role: Role, method: str) -> bool:
    return RANK[role] >= RANK[minimum(method)]


def require(role: Role, name: str, method: str) -> None:
    """PermissionDenied unless ``role`` may call ``method`` (a full gRPC method name)."""
    if not allows(role, method):
        need = minimum(method)
        raise PermissionDenied(
            f"operator {name!r} ({role.value}) may not call {method.rsplit('/', 1)[-1]}",
            causes=(f"{method} needs the {need.value} role or higher; {name!r} has {role.value}.",),
            action=f"Ask a Contributor to create an operator with the {need.value} role for this work.",
        )
