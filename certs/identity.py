"""Identities carried in certificates: SPIFFE-style URI SANs.

    spiffe://asr/operator/<name>
    spiffe://asr/vault/<vault-id>/provider/<name>
    spiffe://asr/vault/<vault-id>/agent/<host>

A recovery host (site to site) also serves TLS; primaries check its certificate by a DNS
name only an agent's certificate can carry, :func:`replica_server_name`, because gRPC checks
a server by DNS/IP SAN, not by the URI: the bare host name would also match a provider of the
vault registered with ``--address <that host name>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from asrerrors import NotAuthenticated

ROLES = ("operator", "provider", "agent")
# RFC 2606 reserves .invalid: no real address ends so, and the registrar refuses it as an
# --address, so only the registrar's own choice puts such a name in a certificate
RESERVED_SUFFIX = ".asr.invalid"


def replica_server_name(host: str) -> str:
    """The DNS SAN a recovery host's certificate carries and its primaries require."""
    return f"{host}.agent{RESERVED_SUFFIX}"


@dataclass(frozen=True)
class Identity:
    role: str
    name: str
    vault_id: str = ""
    serial: int = 0

    @property
    def uri(self) -> str:
        if self.role == "operator":
            return f"spiffe://asr/operator/{self.name}"
        return f"spiffe://asr/vault/{self.vault_id}/{self.role}/{self.name}"


def parse_uri(uri: str) -> tuple[str, str, str]:
    """Return (role, vault_id, name) or raise NotAuthenticated."""
    prefix = "spiffe://asr/"
    if not uri.startswith(prefix):
        raise NotAuthenticated(f"certificate identity {uri!r} is not an asr identity")
    parts = uri[len(prefix):].split("/")
    if len(parts) == 2 and parts[0] == "operator":
        return "operator", "", parts[1]
    if len(parts) == 4 and parts[0] == "vault" and parts[2] in ("provider", "agent"):
        return parts[2], parts[1], parts[3]
    raise NotAuthenticated(f"certificate identity {uri!r} is malformed")


def from_certificate(cert: x509.Certificate) -> Identity:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise NotAuthenticated("the client certificate carries no asr identity") from exc
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
    if len(uris) != 1:
        raise NotAuthenticated("the client certificate must carry exactly one identity URI")
    role, vault_id, name = parse_uri(uris[0])
    return Identity(role=role, name=name, vault_id=vault_id, serial=cert.serial_number)


def from_pem(pem: bytes) -> Identity:
    return from_certificate(x509.load_pem_x509_certificate(pem))
