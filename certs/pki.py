"""Certificate authority operations: CAs, server certificates, CSRs and their signing.

Trust model (docs/design.md, "Identity and trust"): the service CA signs the server
certificate, the operator credential and one issuing CA per vault; each vault CA signs the
client certificates of that vault's providers and agents. Client certificates carry a
SPIFFE-style URI SAN (see :mod:`certs.identity`), and authorisation reads only that.
Keys are ECDSA P-256: fast to generate on registration and small on the wire.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from asrerrors import AuthError

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertKey:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return key_to_pem(self.key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CertKey:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise AuthError("unsupported private key type: expected ECDSA P-256")
        return cls(x509.load_pem_x509_certificate(cert_pem), key)


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object, days: int) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        # Backdated a little so a peer with a slightly slow clock accepts it.
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def create_ca(common_name: str, parent: CertKey | None = None, days: int = 3650) -> CertKey:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer = parent.cert.subject if parent else subject
    builder = _builder(subject, issuer, key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0 if parent else 1), critical=True)
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        ),
        critical=True,
    )
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    signer = parent.key if parent else key
    return CertKey(builder.sign(signer, hashes.SHA256()), key)


def issue_server_cert(ca: CertKey, names: list[str], days: int = 825) -> CertKey:
    """Server certificate valid for every DNS name / IP address in ``names``."""
    key = new_key()
    sans = _general_names(names)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        _builder(subject, ca.cert.subject, key.public_key(), days)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return CertKey(cert, key)


def make_csr(key: PrivateKey, common_name: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def sign_client(
    ca: CertKey, public_key: object, common_name: str, uri: str, days: int = 730, server_names: list[str] | None = None
) -> x509.Certificate:
    """A client certificate whose only authorisation-relevant content is the URI SAN.

    With ``server_names`` it is also a server certificate for those names: a provider uses
    one identity both to dial the cloud and to serve its own agents."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server_names else [])
    sans = [x509.UniformResourceIdentifier(uri), *_general_names(server_names or [])]
    return (
        _builder(subject, ca.cert.subject, public_key, days)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )


def sign_csr(
    ca: CertKey, csr_pem: bytes, uri: str, days: int = 730, server_names: list[str] | None = None
) -> x509.Certificate:
    """Sign a CSR after checking its self-signature (proof the caller holds the key)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise AuthError("the certificate signing request is not valid PEM") from exc
    if not csr.is_signature_valid:
        raise AuthError("the certificate signing request's signature does not verify")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise AuthError("the certificate signing request must use an ECDSA P-256 key")
    return sign_client(ca, csr.public_key(), uri.rsplit("/", 1)[-1], uri, days, server_names)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)

