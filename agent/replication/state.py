"""What the agent remembers about each VM's replication, in its state dir.

    STATE_DIR/replication-state/<vm_id>.json
        {"last_point_id": ..., "last_point_at": ..., "last_app_at": ..., "last_app_attempt_at": ...,
         "last_error": ..., "warning": ..., "warning_code": ...}

``last_point_id`` is the last point the cloud acknowledged *to this agent*. A cycle trusts
the VM's dirty-block tracking only when the cloud's latest point is that point; otherwise
(state lost, a point this agent never saw acknowledged) it resynchronises by hash comparison.
Written atomically after the acknowledgement; losing it costs a resync, never data.
``last_app_attempt_at`` is when a quiesce hook last failed (so a broken hook is tried once per
app-consistent slot); ``warning``/``warning_code`` are what every ProgressReport carries until
an app-consistent point clears them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from durablefile import write_atomic


@dataclass
class VmReplicationState:
    last_point_id: str = ""
    last_point_at: float = 0.0
    last_app_at: float = 0.0
    last_app_attempt_at: float = 0.0
    last_error: str = ""
    warning: str = ""
    warning_code: str = ""


class StateStore:
    def __init__(self, state_dir: str) -> None:
        self.dir = os.path.join(state_dir, "replication-state")
        os.makedirs(self.dir, exist_ok=True)

    def _path(self, vm_id: str) -> str:
        return os.path.join(self.dir, f"{vm_id}.json")

    def get(self, vm_id: str) -> VmReplicationState:
        try:
            with open(self._path(vm_id)) as f:
                doc = json.load(f)
            return VmReplicationState(**{k: doc[k] for k in VmReplicationState.__dataclass_fields__ if k in doc})
        except (FileNotFoundError, ValueError, TypeError):
            return VmReplicationState()

    def save(self, vm_id: str, st: VmReplicationState) -> None:
        write_atomic(self._path(vm_id), json.dumps(asdict(st), indent=2).encode())
