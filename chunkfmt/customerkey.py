"""The customer-managed key: generated on premises, given to a provider's agents, never sent
to the cloud. Failover of an encrypted VM needs the operator to supply the file.

File format (JSON, mode 0600)::

    {"format": "site-recovery-customer-key", "version": 1,
     "key": "<base64 of 32 random bytes>", "fingerprint": "<32 hex>"}

The fingerprint is a BLAKE3 tag of the key, so a damaged or edited key field is caught on
load, and operators can compare keys without revealing them. Subkeys are derived with
HKDF-SHA256 so that the id key and the AEAD key are independent.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from functools import cached_property
from pathlib import Path

import blake3
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import durablefile
from asrerrors import EncryptionKeyError

KEY_FILE_FORMAT = "site-recovery-customer-key"
KEY_FILE_VERSION = 1
_FINGERPRINT_CONTEXT = "site-recovery customer key v1 fingerprint"


def _hkdf(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


class CustomerKey:
    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise EncryptionKeyError("a customer-managed key must be 32 bytes")
        self._secret = secret

    @classmethod
    def generate(cls) -> CustomerKey:
        return cls(secrets.token_bytes(32))

    @cached_property
    def fingerprint(self) -> str:
        return blake3.blake3(self._secret, derive_key_context=_FINGERPRINT_CONTEXT).hexdigest()[:32]

    @cached_property
    def id_key(self) -> bytes:
        """Key for :func:`chunkfmt.chunk_id` of this key's VMs."""
        return _hkdf(self._secret, b"site-recovery chunk id key v1")

    @cached_property
    def aead_key(self) -> bytes:
        """AES-256-GCM key for the frames of this key's VMs."""
        return _hkdf(self._secret, b"site-recovery chunk aead key v1")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key file with mode 0600 from its creation, atomically and durably
        (:mod:`durablefile`)."""
        body = json.dumps(
            {
                "format": KEY_FILE_FORMAT,
                "version": KEY_FILE_VERSION,
                "key": base64.b64encode(self._secret).decode("ascii"),
                "fingerprint": self.fingerprint,
            },
            indent=2,
        ).encode() + b"\n"
        durablefile.write_atomic(path, body, durablefile.PRIVATE)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CustomerKey:
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError as exc:
            raise EncryptionKeyError(f"customer-managed key file {path} does not exist") from exc
        except OSError as exc:
            raise EncryptionKeyError(
                f"cannot read customer-managed key file {path}: {exc}"
            ) from exc
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
                raise ValueError("not a customer-managed key file")
            if doc.get("version") != KEY_FILE_VERSION:
                raise ValueError(f"unsupported key file version {doc.get('version')!r}")
            secret = base64.b64decode(doc["key"], validate=True)
            fingerprint = doc["fingerprint"]
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise EncryptionKeyError(
                f"customer-managed key file {path} is damaged: {exc}"
            ) from exc
        if len(secret) != 32:
            raise EncryptionKeyError(f"customer-managed key file {path} is damaged: bad key length")
        key = cls(secret)
        if key.fingerprint != fingerprint:
            raise EncryptionKeyError(
                f"customer-managed key file {path} is damaged: the key does not match its "
                "fingerprint"
            )
        return key

    def __repr__(self) -> str:
        return f"CustomerKey(fingerprint={self.fingerprint})"
