"""The vault registration key file (ASR's "vault credentials" file).

A JSON document written 0600::

    {
      "format": "asr-registration-key", "version": 1,
      "vault_id": "...", "vault_name": "...", "region": "japaneast",
      "endpoints": {"api": ["dr1:7443", "dr2:7443"], "registration": ["dr1:7444", "dr2:7444"]},
      "service_ca_pem": "...",   # pins the cloud's server certificate
      "vault_ca_pem": "...",     # the vault's issuing CA (client certificates chain to it)
      "secret": "<base64url, 256 bits>",
      "issued_at": 1780000000.0, "expires_at": 1780432000.0,
      "checksum": "<sha256 hex of the canonical JSON of every other field>"
    }

Each endpoint entry is a list of ``HOST:PORT`` (every cloud service process that serves the
vault, tried in that order: asrchannel.endpoints), or a single ``HOST:PORT`` string: what
releases before several endpoints wrote, and what is still written when there is only one,
so such a key file reads the same in every release.

The cloud stores only SHA-256 of the secret. The checksum catches truncation and editing
on the client before anything is sent; the cloud's hash comparison is what authorises.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import secrets
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cryptography import x509

import durablefile
from asrchannel.endpoints import is_hostport
from asrerrors import KeyFileExpired, KeyFileUnreadable

FORMAT = "asr-registration-key"
VERSION = 1
DEFAULT_VALID_DAYS = 5
MAX_VALID_DAYS = 30
SECRET_BYTES = 32


@dataclass
class RegistrationKey:
    vault_id: str
    vault_name: str
    region: str
    endpoints: dict[str, Any]     # api, registration: "HOST:PORT" or a list of them
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

    @property
    def api_endpoints(self) -> list[str]:
        return _as_list(self.endpoints["api"])

    @property
    def registration_endpoints(self) -> list[str]:
        return _as_list(self.endpoints["registration"])

    def check_valid(self, now: float, path: str = "the key file") -> None:
        if now >= self.expires_at:
            raise KeyFileExpired(
                f"registration key {path} for vault {self.vault_name!r} expired at "
                f"{_iso(self.expires_at)}"
            )


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def endpoints_entry(endpoints: list[str]) -> str | list[str]:
    """How a key file holds a list of endpoints: one as a plain string (readable by releases
    before several endpoints), several as the list."""
    return endpoints[0] if len(endpoints) == 1 else list(endpoints)


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _iso(t: float) -> str:
    from asrclock import iso

    return iso(t)


def write(path: str, key: RegistrationKey) -> None:
    durablefile.write_atomic(path, key.to_bytes(), durablefile.PRIVATE)


def parse(data: bytes, path: str = "key file") -> RegistrationKey:
    """Parse and check a key file; every failure is a KeyFileUnreadable naming why.

    Order: JSON → format marker → version → the set of fields → checksum (damage is reported
    as damage) → each field's type and shape (a file sealed with a wrong value, e.g. a number
    where ``endpoints.registration`` must be ``HOST:PORT``, names that field)."""
    try:
        doc: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileUnreadable(
            f"{path} is not a registration key file (not valid JSON: {exc.__class__.__name__})"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeyFileUnreadable(f"{path} is not a registration key file (format marker missing)")
    version = doc.get("version")
    if type(version) is not int or version != VERSION:
        raise KeyFileUnreadable(
            f"{path} has key file version {version!r}; this release reads version {VERSION}",
            action="Generate a key with the same release of the cloud service and tools.",
        )
    missing = sorted(_FIELDS - set(doc))
    unknown = sorted(set(doc) - _FIELDS)
    if missing or unknown:
        parts = ([f"missing: {', '.join(missing)}"] if missing else []) + (
            [f"unknown: {', '.join(unknown)}"] if unknown else [])
        raise KeyFileUnreadable(f"{path} has missing or unknown fields ({'; '.join(parts)})")
    claimed = doc["checksum"]
    body = {k: v for k, v in doc.items() if k != "checksum"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    if not isinstance(claimed, str) or hashlib.sha256(canonical).hexdigest() != claimed:
        raise KeyFileUnreadable(f"{path} fails its checksum: the file was modified or damaged")
    for name, check in _CHECKS:
        problem = check(doc, name)
        if problem:
            raise KeyFileUnreadable(
                f"{path}: field {name} {problem}",
                causes=("The file was written by another tool or edited and resealed.",),
            )
    return RegistrationKey(**doc)


def _value(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        value = value[part]
    return value


def _text(doc: dict[str, Any], name: str) -> str:
    v = _value(doc, name)
    if not isinstance(v, str) or not v.strip():
        return f"must be a non-empty string, not {_shown(v)}"
    return ""


def _hostports(doc: dict[str, Any], name: str) -> str:
    v = _value(doc, name)
    if isinstance(v, list):
        if not v:
            return "must list at least one HOST:PORT, not an empty list"
        for item in v:
            if not isinstance(item, str) or not is_hostport(item):
                return f"must list HOST:PORT strings with a port from 1 to 65535, not {_shown(item)}"
        return ""
    if not isinstance(v, str):
        return f"must be a HOST:PORT string or a list of them, not {_shown(v)}"
    if not is_hostport(v):
        return f"must be HOST:PORT with a port from 1 to 65535, not {v!r}"
    return ""


def _endpoints(doc: dict[str, Any], name: str) -> str:
    v = doc[name]
    if not isinstance(v, dict):
        return f"must be an object with api and registration, not {_shown(v)}"
    if set(v) != {"api", "registration"}:
        return f"must have exactly the keys api and registration, not {sorted(v)}"
    return ""


def _certificate(doc: dict[str, Any], name: str) -> str:
    v = doc[name]
    if not isinstance(v, str):
        return f"must be a PEM certificate, not {_shown(v)}"
    try:
        x509.load_pem_x509_certificate(v.encode())
    except ValueError:
        return "is not a PEM certificate"
    return ""


def _secret(doc: dict[str, Any], name: str) -> str:
    v = doc[name]
    if not isinstance(v, str):
        return f"must be a base64url string, not {_shown(v)}"
    try:
        raw = base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
    except (ValueError, binascii.Error):
        return "is not base64url"
    if len(raw) != SECRET_BYTES:
        return f"must hold {SECRET_BYTES} bytes, not {len(raw)}"
    return ""


def _time(doc: dict[str, Any], name: str) -> str:
    v = doc[name]
    if type(v) not in (int, float) or not math.isfinite(v) or v <= 0:
        return f"must be a time in seconds since 1970, not {_shown(v)}"
    if name == "expires_at" and not _time(doc, "issued_at") and v <= doc["issued_at"]:
        return "must be later than issued_at"
    return ""


def _digest(doc: dict[str, Any], name: str) -> str:
    v = doc[name]
    if not isinstance(v, str) or len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        return "must be 64 lower-case hex digits"
    return ""


def _shown(v: Any) -> str:
    return f"{type(v).__name__} {json.dumps(v)[:40]}"


_FIELDS = {f.name for f in fields(RegistrationKey)}
_CHECKS: list[tuple[str, Any]] = [
    ("vault_id", _text), ("vault_name", _text), ("region", _text),
    ("endpoints", _endpoints), ("endpoints.api", _hostports), ("endpoints.registration", _hostports),
    ("service_ca_pem", _certificate), ("vault_ca_pem", _certificate), ("secret", _secret),
    ("issued_at", _time), ("expires_at", _time), ("checksum", _digest),
]


def read(path: str) -> RegistrationKey:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise KeyFileUnreadable(f"cannot read registration key file {path}: {exc.strerror}") from exc
    return parse(data, path)
