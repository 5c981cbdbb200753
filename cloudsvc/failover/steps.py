"""The typed steps of a runner job (failover operations, vault teardown).

A job's steps are kept in its context (JSON in the jobs table), one per task with the same
index, so a restarted cloud service carries the job on from what the database says. Steps
run in stages: every step of a stage runs in parallel; the next stage starts when all steps
of the current one succeeded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class StepKind(StrEnum):
    # site steps: a command to the VM's provider; the task ends when the site answers
    REPLICATE = "replicate"              # ReplicateNow(shutdown_first): the final point of a planned failover
    POWER = "power"                      # PowerVm start|stop
    DISABLE = "disable"                  # DisableReplication
    FAILBACK = "failback"                # Failback: write back the differing blocks, start on premises
    GRANT = "grant"                      # EnableReplication with the item's new epoch: the primary is active
    REVERSE = "reverse"                  # ReverseReplicate start|stop: the primary follows the failover VM
    # a site step on the recovery host (site to site, cloudsvc.failover.site): action
    # failover | delete | stop | start of the VM of kind ``rkind`` made of the replica, or
    # release (vault teardown)
    REPLICA = "replica"
    # cloud steps: run by the runner's thread pool
    MATERIALISE = "materialise"
    DELETE_RECOVERED = "delete_recovered"
    STOP_RECOVERED = "stop_recovered"
    COMMIT = "commit"
    SCRIPT = "script"
    MANUAL = "manual"
    # vault teardown (cloudsvc.teardown)
    TEARDOWN_ITEMS = "teardown_items"
    TEARDOWN_RECOVERED = "teardown_recovered"
    TEARDOWN_SERVERS = "teardown_servers"
    TEARDOWN_STORAGE = "teardown_storage"
    TEARDOWN_VAULT = "teardown_vault"


SITE_KINDS = frozenset({StepKind.REPLICATE, StepKind.POWER, StepKind.DISABLE, StepKind.FAILBACK, StepKind.GRANT,
                        StepKind.REPLICA, StepKind.REVERSE})


@dataclass
class Step:
    stage: int
    kind: StepKind
    name: str
    vm: str = ""                         # vm_id the step acts on
    point: str = ""                      # materialise: "latest", "latest-app-consistent", an id, or "replicated"
    rkind: str = ""                      # recovered VM kind: "test" | "failover"
    action: str = ""                     # power: start|stop; replica: see REPLICA; script/manual: the name
    tolerant: bool = False               # a site step that may give up: skipped after deadline_s or a failure
    deadline_s: float = 0.0
    keep_own: bool = False               # delete_recovered: keep the VM this job made (change-point)
    argv: list[str] = field(default_factory=list)
    timeout_seconds: float = 0.0
    instructions: str = ""
    storage: str = ""                    # teardown_storage: the account

    @property
    def site(self) -> bool:
        return self.kind in SITE_KINDS

    @property
    def on_recovery_site(self) -> bool:
        """A command to the recovery host's provider, not the primary's (site to site)."""
        return self.kind == StepKind.REPLICA

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        known = cls.__dataclass_fields__
        args = {k: v for k, v in d.items() if k in known}
        args["kind"] = StepKind(d["kind"])
        return cls(**args)


class Stages:
    """Builds a step list stage by stage."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.stage = 0

    def add(self, kind: StepKind, name: str, vm: str = "", **kw: Any) -> None:
        self.steps.append(Step(self.stage, kind, name, vm, **kw))

    def next(self) -> None:
        if self.steps and self.steps[-1].stage == self.stage:
            self.stage += 1
