"""The fence marker: this host's copy of a VM is stale (the VM is active elsewhere).

``vm_dir/.state/<name>/fenced.json``, written with ``durablefile.write_atomic`` under the
VM lock::

    {"vm": "db01", "vm_id": "…", "reason": "failed over: planned",
     "epoch": 3,          # the epoch this host held for the VM when it was fenced
     "newer_epoch": 4,    # the vault's newer epoch when it is known, else 0
     "fenced_at": 1780000000.0}

While the marker exists the local hypervisor refuses to start the VM and refuses guest
writes (``Fenced``, ASR-0044), and the replication engine keeps the VM off its schedule.
Fencing powers the VM off. The marker goes when this host becomes the active side again
(EnableReplication, or a Failback whose blocks were written), or by the operator's local
override ``asr-agent vm unfence NAME --force``. See docs/design.md, "Fencing on the host".
"""

from __future__ import annotations

import json
from typing import Any

from asrclock import iso
from asrerrors import Fenced

UNFENCE_HINT = ("Fail back (asr failover planned VM --direction to-primary) to make this host the active side "
                "again. Only if the vault side was retired for good: asr-agent vm unfence {name} --config FILE "
                "--force.")


def read_marker(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except ValueError:
        # a damaged marker still fences: failing open would let a stale copy run
        return {"reason": "the fence marker is damaged", "epoch": 0, "newer_epoch": 0, "fenced_at": 0.0}
    return doc if isinstance(doc, dict) else {"reason": "the fence marker is damaged", "epoch": 0}


def describe(name: str, marker: dict[str, Any]) -> str:
    """One line: why and since when the VM is fenced."""
    since = f" since {iso(float(marker['fenced_at']))}" if marker.get("fenced_at") else ""
    epochs = f"epoch {marker.get('epoch', 0)}"
    if marker.get("newer_epoch"):
        epochs += f", the vault's is {marker['newer_epoch']}"
    return f"VM {name} is fenced on this host{since}: {marker.get('reason', '?')} ({epochs})"


def refusal(name: str, marker: dict[str, Any], what: str) -> Fenced:
    return Fenced(f"{describe(name, marker)}; {what}",
                  action=UNFENCE_HINT.format(name=name))
