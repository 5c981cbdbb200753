"""Failover states of a protected item and the operations allowed in each (ASR's vocabulary).

::

    Protected ──test-failover──▶ TestFailoverInProgress ──▶ TestFailoverCleanupPending
        ▲                                                      │ test-complete
        └──────────────────────────────────────────────────────┘
    Protected ──planned-failover──▶ PlannedFailoverInProgress ─┐
    Protected ──unplanned-failover─▶ UnplannedFailoverInProgress┴▶ FailoverCommitPending
    FailoverCommitPending ──commit──▶ FailoverCommitted
    FailoverCommitPending ──cancel──▶ Protected          (the recovered VM is deleted)
    FailoverCommitPending ──change-point──▶ FailoverCommitPending (re-made from another point)
    FailoverCommitted ──failback──▶ FailbackInProgress ──▶ FailbackCommitPending
    FailbackCommitPending ──commit──▶ Protected          (the recovered VM is deleted)
    Protected ──migrate──▶ MigrationInProgress ──▶ (protection disabled; the VM lives in the vault)

A job that fails puts every item back in the state it started from. Replication is never
paused by these states (the replication engine refuses only DisablingProtection).
"""

from __future__ import annotations

from cloudsvc.protection import ALLOWED

IN_PROGRESS = (
    "TestFailoverInProgress", "TestFailoverCleanupInProgress", "PlannedFailoverInProgress",
    "UnplannedFailoverInProgress", "FailoverInProgress", "CommitInProgress", "FailbackInProgress",
    "MigrationInProgress",
)

FAILOVER_ALLOWED: dict[str, list[str]] = {
    "TestFailoverCleanupPending": ["test-complete", "unplanned-failover"],
    "FailoverCommitPending": ["commit", "cancel", "change-point"],
    "FailoverCommitted": ["failback"],
    "FailbackCommitPending": ["commit"],
    **{s: [] for s in IN_PROGRESS},
}


def install() -> None:
    """Extend protection's table of allowed operations (idempotent)."""
    for state, ops in FAILOVER_ALLOWED.items():
        ALLOWED.setdefault(state, list(ops))
    protected = ALLOWED.setdefault("Protected", [])
    for op in ("test-failover", "planned-failover", "unplanned-failover", "migrate"):
        if op not in protected:
            protected.append(op)


install()
