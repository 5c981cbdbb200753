"""The site's customer-managed key: generated here at registration, never sent to the cloud.

The provider gives it to its agents over the host link (mTLS inside the site) with each
EnableReplication command, so every chunk is encrypted before it leaves a host.
"""

from __future__ import annotations

import os

from chunkfmt import CustomerKey


def key_path(state_dir: str) -> str:
    return os.path.join(os.path.abspath(state_dir), "customer.key")


def ensure_customer_key(state_dir: str) -> str:
    """Create the key (0600) unless one exists; return its fingerprint (safe to share)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = key_path(state_dir)
    if os.path.exists(path):
        return CustomerKey.load(path).fingerprint
    key = CustomerKey.generate()
    key.save(path)
    return key.fingerprint


def load_key_bytes(state_dir: str) -> bytes | None:
    path = key_path(state_dir)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()
