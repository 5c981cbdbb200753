"""Replication settings the provider pushed to this host, kept in the agent's state dir.

    STATE_DIR/host-policy.json             the cloud's policy (ConfigureHost)
    STATE_DIR/replication/<vm_id>.json     one file per VM being replicated (EnableReplication),
                                           with the epoch the vault granted this host for it and,
                                           site-to-site, its "replica_target" (the recovery host)
    STATE_DIR/customer.key                 the site's customer-managed key (0600), when encrypting

Written with ``durablefile.write_atomic``; applying the same command twice gives the same
files (idempotent), so a command delivered again after a restart has no further effect.

The epoch (docs/design.md, "Fencing on the host"): EnableReplication and a successful Failback
grant this host the epoch their command carries; a settings file written before epochs
existed holds none and means epoch 1. A policy written before policies had a compression
(``policy.compression`` "", from an older cloud or file) reads as ``chunkfmt.DEFAULT_COMPRESSION``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict, ParseDict

from asrpb import control_pb2, inventory_pb2
from chunkfmt import DEFAULT_COMPRESSION
from durablefile import PRIVATE, write_atomic

DEFAULT_EPOCH = 1  # a settings file without an epoch (written before epochs existed)


@dataclass
class ReplicationSettings:
    vm_id: str
    vm_name: str
    vault_id: str
    policy: inventory_pb2.Policy
    enabled_at: float
    epoch: int = DEFAULT_EPOCH
    # site-to-site (issue 11): ship to this recovery host instead of the vault; None: the vault
    replica_target: ReplicaTarget | None = None


@dataclass(frozen=True)
class ReplicaTarget:
    recovery_host: str
    address: str
    pairing_id: str


class Settings:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.repl_dir = os.path.join(state_dir, "replication")
        os.makedirs(self.repl_dir, exist_ok=True)

    @property
    def customer_key_path(self) -> str:
        return os.path.join(self.state_dir, "customer.key")

    def save_host_policy(self, cmd: control_pb2.ConfigureHost) -> None:
        doc = {"vault_id": cmd.vault_id, "policy": _policy_doc(cmd.policy)}
        write_atomic(os.path.join(self.state_dir, "host-policy.json"), json.dumps(doc, indent=2).encode())

    def host_policy(self) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.state_dir, "host-policy.json")) as f:
                return dict(json.load(f))
        except FileNotFoundError:
            return None

    def enable(self, cmd: control_pb2.EnableReplication, now: float, epoch: int = 0) -> None:
        """Save the VM's settings; a non-zero ``epoch`` is granted (0 keeps the one held)."""
        if cmd.customer_key:
            write_atomic(self.customer_key_path, cmd.customer_key, PRIVATE)
        old = self.get(cmd.vm_id)
        doc: dict[str, Any] = {"vm_id": cmd.vm_id, "vm_name": cmd.vm_name, "vault_id": cmd.vault_id,
                               "policy": _policy_doc(cmd.policy), "enabled_at": old.enabled_at if old else now,
                               "epoch": epoch or (old.epoch if old else DEFAULT_EPOCH)}
        t = cmd.replica_target
        if t.address:
            doc["replica_target"] = {"recovery_host": t.recovery_host, "address": t.address,
                                     "pairing_id": t.pairing_id}
        write_atomic(self._path(cmd.vm_id), json.dumps(doc, indent=2).encode())

    def grant(self, vm_id: str, epoch: int) -> bool:
        """Hold ``epoch`` for ``vm_id`` from now on; False when the VM has no settings here."""
        path = self._path(vm_id)
        try:
            with open(path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return False
        if doc.get("epoch") != epoch:
            doc["epoch"] = epoch
            write_atomic(path, json.dumps(doc, indent=2).encode())
        return True

    def disable(self, vm_id: str) -> None:
        try:
            os.unlink(self._path(vm_id))
        except FileNotFoundError:
            pass

    def get(self, vm_id: str) -> ReplicationSettings | None:
        try:
            with open(self._path(vm_id)) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return None
        target = doc.get("replica_target")
        policy = ParseDict(doc["policy"], inventory_pb2.Policy())
        policy.compression = policy.compression or DEFAULT_COMPRESSION  # a file written before policies had one
        return ReplicationSettings(doc["vm_id"], doc["vm_name"], doc.get("vault_id", ""),
                                   policy, float(doc["enabled_at"]),
                                   int(doc.get("epoch", DEFAULT_EPOCH)),
                                   ReplicaTarget(**target) if isinstance(target, dict) else None)

    def all(self) -> list[ReplicationSettings]:
        out = []
        for name in sorted(os.listdir(self.repl_dir)):
            if name.endswith(".json"):
                s = self.get(name[:-5])
                if s is not None:
                    out.append(s)
        return out

    def _path(self, vm_id: str) -> str:
        return os.path.join(self.repl_dir, f"{vm_id}.json")


def _policy_doc(p: inventory_pb2.Policy) -> dict[str, Any]:
    return MessageToDict(p, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
