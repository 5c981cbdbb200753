"""The identity files in a provider's or agent's state directory.

    STATE_DIR/identity.key        private key, 0600, generated here and never sent
    STATE_DIR/identity.pem        client certificate followed by the vault issuing CA
    STATE_DIR/service_ca.pem      pins the cloud's server certificate
    STATE_DIR/registration.json   vault, role, name, endpoints (0600: names the vault)

``endpoints`` holds ``api`` and ``registration``, each a list of ``HOST:PORT`` tried in order
(asrchannel.endpoints); registrations made before several endpoints hold one string each,
read as a list of one.
    STATE_DIR/status.json         link state written by the running daemon
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field

import durablefile
from asrchannel.endpoints import check_endpoints
from asrerrors import NotAuthenticated


@dataclass
class SiteIdentity:
    state_dir: str
    vault_id: str
    vault_name: str
    role: str
    name: str
    identity: str
    endpoints: dict[str, list[str]]
    registered_at: float
    provider: str = ""             # agents: provider name
    provider_address: str = ""     # agents: HOST:PORT the provider listens on
    encryption: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def key_path(self) -> str:
        return os.path.join(self.state_dir, "identity.key")

    @property
    def cert_path(self) -> str:
        return os.path.join(self.state_dir, "identity.pem")

    @property
    def ca_path(self) -> str:
        return os.path.join(self.state_dir, "service_ca.pem")

    def pems(self) -> tuple[bytes, bytes, bytes]:
        """(service CA, certificate chain, private key)."""
        out = []
        for p in (self.ca_path, self.cert_path, self.key_path):
            with open(p, "rb") as f:
                out.append(f.read())
        return out[0], out[1], out[2]

    def save(self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        # Key and certificate first, the registration record last: a state dir with a
        # registration.json always has the identity it describes.
        durablefile.write_atomic(self.key_path, key_pem, durablefile.PRIVATE)
        durablefile.write_atomic(self.cert_path, cert_pem)
        durablefile.write_atomic(self.ca_path, ca_pem)
        self.save_record()

    def save_record(self) -> None:
        """Rewrite registration.json alone (atomically, 0600): e.g. the endpoints the cloud announced."""
        doc = asdict(self)
        doc.pop("state_dir")
        durablefile.write_atomic(os.path.join(self.state_dir, "registration.json"), json.dumps(doc, indent=2).encode(),
                                 durablefile.PRIVATE)


def load(state_dir: str) -> SiteIdentity:
    state_dir = os.path.abspath(state_dir)
    path = os.path.join(state_dir, "registration.json")
    try:
        with open(path) as f:
            doc = json.load(f)
        ident = SiteIdentity(state_dir=state_dir, **doc)
    except FileNotFoundError as exc:
        raise NotAuthenticated(
            f"{state_dir} holds no registration",
            action="Register first with the 'register --key-file FILE' command.",
        ) from exc
    except (ValueError, TypeError) as exc:
        raise NotAuthenticated(f"{path} is damaged: {exc}", action="Register again with --force.") from exc
    ends = ident.endpoints if isinstance(ident.endpoints, dict) else {}
    ident.endpoints = {
        role: check_endpoints(ends.get(role), f"endpoints.{role} in {path}",
                              'Set it to a list of "HOST:PORT" (the cloud service\'s addresses, as the key file '
                              "names them), or register again with --force.")
        for role in ("api", "registration")}
    return ident


_status_lock = threading.Lock()


def write_status(state_dir: str, doc: dict[str, object]) -> None:
    """Update the given sections of STATE_DIR/status.json, keeping the others."""
    with _status_lock:
        current = read_status(state_dir)
        current.update(doc)
        durablefile.write_atomic(os.path.join(state_dir, "status.json"), json.dumps(current, indent=2).encode())


def read_status(state_dir: str) -> dict[str, object]:
    try:
        with open(os.path.join(state_dir, "status.json")) as f:
            return dict(json.load(f))
    except (FileNotFoundError, ValueError):
        return {}
