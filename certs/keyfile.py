"""The vault registration key file (ASR's "vault credentials" file).

A JSON document written 0600::

    {
      "format": "asr-registration-key", "version": 1,
      "vault_id": "...", "vault_name": "...", "region": "japaneast",
      "endpoints": {"api": "host:port", "registration": "host:port"},
      "service_ca_pem": "...",   # pins the cloud's server certificate
      "vault_ca_pem": "...",     # the vault's issuing CA (client certificates chain to it)
      "secret": "<base64url, 256 bits>",
      "issued_at": 1780000000.0, "expires_at": 1780432000.0,
      "checksum": "<sha256 hex of the canonical JSON of every other field>"
    }

The cloud stores only SHA-256 of the secret. The checksum catches truncation and editing
on the client before anything is sent; the cloud's hash comparison is what authorises.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from asrerrors import KeyFileExpired, KeyFileUnreadable
from certs.pki import write_private

FORMAT = "asr-registration-key"
VERSION = 1
DEFAULT_VALID_DAYS = 5
MAX_VALID_DAYS = 30


@dataclass
class RegistrationKey:
    vault_id: str
    vault_name: str
    region: str
    endpoints: dict[str, str]
    service_ca_pem: str
    vault_ca_pem: str
    secret: str
    issued_at: float
    expires_at: float
    format: str = FORMAT
    version: int = VERSION
    checksum: str = field(default="")

    def _canonical(self) -> bytes:
        body = asdict(self)
        body.pop("checksum")
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def sealed(self) -> RegistrationKey:
        self.checksum = hashlib.sha256(self._canonical()).hexdigest()
        return self

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self.sealed()), indent=2, sort_keys=True) + "\n").encode()

    def check_valid(self, now: float, path: str = "the key file") -> None:
        if now >= self.expires_at:
            raise KeyFileExpired(
                f"registration key {path} for vault {self.vault_name!r} expired at "
                f"{_iso(self.expires_at)}"
            )


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _iso(t: float) -> str:
    from asrclock import iso

    return iso(t)


def write(path: str, key: RegistrationKey) -> None:
    write_private(path, key.to_bytes())


def parse(data: bytes, path: str = "key file") -> RegistrationKey:
    """Parse and integrity-check a key file; every failure is a KeyFileUnreadable naming why."""
    try:
        doc: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileUnreadable(
            f"{path} is not a registration key file (not valid JSON: {exc.__class__.__name__})"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeyFileUnreadable(f"{path} is not a registration key file (format marker missing)")
    if doc.get("version") != VERSION:
        raise KeyFileUnreadable(
            f"{path} has key file version {doc.get('version')!r}; this release reads version {VERSION}",
            action="Generate a key with the same release of the cloud service and tools.",
        )
    try:
        key = RegistrationKey(**doc)
    except TypeError as exc:
        raise KeyFileUnreadable(f"{path} has missing or unknown fields ({exc})") from exc
    claimed = key.checksum
    if not isinstance(claimed, str) or hashlib.sha256(key._canonical()).hexdigest() != claimed:
        raise KeyFileUnreadable(f"{path} fails its checksum: the file was modified or damaged")
    return key


def read(path: str) -> RegistrationKey:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise KeyFileUnreadable(f"cannot read registration key file {path}: {exc.strerror}") from exc
    return parse(data, path)
