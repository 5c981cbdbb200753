"""The pairings a recovery host accepted: which primary host may ship which VM here.

    REPLICA_DIR/<vm_id>/pairing.json
        {"vm_id", "vm_name", "source_host", "pairing_id", "vault_id", "policy", "disks",
         "epoch", "accepted_at"}

One owner: :class:`Pairings` (AcceptReplica and ReleaseReplica write it; the replica service
reads it on every call). Written with ``durablefile.write_atomic``. Accepting the same pairing
again changes nothing but the policy and disks (at-least-once delivery); accepting another
pairing id for the VM replaces the old one (re-paired: the old source is refused from then on).
``epoch`` is the highest epoch of the VM this host has seen (from AcceptReplica's command and
from sessions): a session from an older epoch is refused with Fenced.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict, ParseDict

from asrerrors import UsageError
from asrpb import control_pb2, inventory_pb2
from durablefile import write_atomic

_VM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_vm_id(vm_id: str) -> str:
    """A VM id names a directory here: refuse anything that is not a plain name."""
    if not _VM_ID.match(vm_id):
        raise UsageError(f"VM id {vm_id!r} is not valid")
    return vm_id


@dataclass(frozen=True)
class Pairing:
    vm_id: str
    vm_name: str
    source_host: str
    pairing_id: str
    vault_id: str
    policy: inventory_pb2.Policy
    disks: tuple[inventory_pb2.Disk, ...]
    epoch: int
    accepted_at: float

    def to_doc(self) -> dict[str, Any]:
        return {"vm_id": self.vm_id, "vm_name": self.vm_name, "source_host": self.source_host,
                "pairing_id": self.pairing_id, "vault_id": self.vault_id,
                "policy": MessageToDict(self.policy, preserving_proto_field_name=True),
                "disks": [MessageToDict(d, preserving_proto_field_name=True) for d in self.disks],
                "epoch": self.epoch, "accepted_at": self.accepted_at}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Pairing:
        return cls(str(doc["vm_id"]), str(doc["vm_name"]), str(doc["source_host"]), str(doc["pairing_id"]),
                   str(doc.get("vault_id", "")), ParseDict(doc.get("policy") or {}, inventory_pb2.Policy()),
                   tuple(ParseDict(d, inventory_pb2.Disk()) for d in doc.get("disks") or []),
                   int(doc.get("epoch", 0)), float(doc.get("accepted_at", 0.0)))


class Pairings:
    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, vm_id: str) -> str:
        return os.path.join(self.root, check_vm_id(vm_id), "pairing.json")

    def get(self, vm_id: str) -> Pairing | None:
        try:
            with open(self._path(vm_id)) as f:
                return Pairing.from_doc(json.load(f))
        except FileNotFoundError:
            return None

    def all(self) -> list[Pairing]:
        out = []
        for name in sorted(os.listdir(self.root)):
            if _VM_ID.match(name):
                p = self.get(name)
                if p is not None:
                    out.append(p)
        return out

    def _save(self, p: Pairing) -> None:
        os.makedirs(os.path.dirname(self._path(p.vm_id)), exist_ok=True)
        write_atomic(self._path(p.vm_id), json.dumps(p.to_doc(), indent=2).encode())

    def accept(self, body: control_pb2.AcceptReplica, epoch: int, now: float) -> tuple[Pairing, bool]:
        """Record the pairing; returns it and whether it replaced another pairing id."""
        with self._lock:
            old = self.get(body.vm_id)
            replaced = old is not None and old.pairing_id != body.pairing_id
            p = Pairing(body.vm_id, body.vm_name, body.source_host, body.pairing_id, body.vault_id,
                        body.policy, tuple(body.disks),
                        max(epoch, old.epoch if old is not None else 0),
                        old.accepted_at if old is not None and not replaced else now)
            self._save(p)
            return p, replaced

    def raise_epoch(self, vm_id: str, epoch: int) -> int:
        """Hold ``epoch`` when it is newer than the one held; returns the epoch held."""
        with self._lock:
            p = self.get(vm_id)
            if p is None:
                return 0
            if epoch > p.epoch:
                p = Pairing(**{**p.__dict__, "epoch": epoch})
                self._save(p)
            return p.epoch

    def drop(self, vm_id: str) -> None:
        with self._lock:
            try:
                os.unlink(self._path(vm_id))
            except FileNotFoundError:
                pass
