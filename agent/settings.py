"""Replication settings the provider pushed to this host, kept in the agent's state dir.

    STATE_DIR/host-policy.json             the cloud's policy (ConfigureHost)
    STATE_DIR/replication/<vm_id>.json     one file per VM being replicated (EnableReplication)
    STATE_DIR/customer.key                 the site's customer-managed key (0600), when encrypting

Written atomically; applying the same command twice gives the same files (idempotent), so
a command delivered again after a restart has no further effect.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict, ParseDict

from asrpb import control_pb2, inventory_pb2
from certs.pki import write_private, write_public


@dataclass
class ReplicationSettings:
    vm_id: str
    vm_name: str
    vault_id: str
    policy: inventory_pb2.Policy
    enabled_at: float


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
        write_public(os.path.join(self.state_dir, "host-policy.json"), json.dumps(doc, indent=2).encode())

    def host_policy(self) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.state_dir, "host-policy.json")) as f:
                return dict(json.load(f))
        except FileNotFoundError:
            return None

    def enable(self, cmd: control_pb2.EnableReplication, now: float) -> None:
        if cmd.customer_key:
            write_private(self.customer_key_path, cmd.customer_key)
        old = self.get(cmd.vm_id)
        doc = {"vm_id": cmd.vm_id, "vm_name": cmd.vm_name, "vault_id": cmd.vault_id,
               "policy": _policy_doc(cmd.policy), "enabled_at": old.enabled_at if old else now}
        write_public(self._path(cmd.vm_id), json.dumps(doc, indent=2).encode())

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
        return ReplicationSettings(doc["vm_id"], doc["vm_name"], doc.get("vault_id", ""),
                                   ParseDict(doc["policy"], inventory_pb2.Policy()), float(doc["enabled_at"]))

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
