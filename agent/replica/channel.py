"""The primary's channels to recovery hosts, and the trust both ends use.

The trust anchor of a site-to-site connection is the **vault CA** (the second certificate of
``identity.pem``), not the service CA: a certificate of another vault never completes the
handshake, in either direction. The primary dials ``ReplicaTarget.address`` (through the
configured proxy, as every other outbound connection of the agent) and requires the server's
certificate to carry ``replica_server_name(ReplicaTarget.recovery_host)``
(``grpc.ssl_target_name_override``): a name in the reserved ``.asr.invalid`` domain that the
registrar puts only into the certificate of an agent of that host registered with
``asr-agent register --address`` (with its addresses as DNS/IP SANs), so neither another
agent nor a provider of the vault registered with ``--address <that host>`` can answer.
Every call carries the pairing id as request metadata (``asr-pairing-id``), which the
recovery host checks against its AcceptReplica.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.replication.cycle import _Rpc
from asrchannel.proxy import ProxyUrl
from asrchannel.tls import client_channel
from asrerrors import InvalidConfig, NotAuthenticated
from certs.identity import replica_server_name
from registration.state import SiteIdentity

# request metadata of every call to a recovery host: the vault's pairing the VM is shipped under
# (``replica_api`` authorises the call by it)
PAIRING_METADATA = "asr-pairing-id"


def vault_ca_pem(ident: SiteIdentity) -> bytes:
    """The vault's issuing CA: the last certificate of the identity chain."""
    _, chain, _ = ident.pems()
    certs = x509.load_pem_x509_certificates(chain)
    if len(certs) < 2:
        raise NotAuthenticated(f"{ident.cert_path} holds no vault CA after the certificate",
                               action="Register the agent again (asr-agent register --force).")
    return certs[-1].public_bytes(serialization.Encoding.PEM)


def check_can_serve(ident: SiteIdentity) -> None:
    """Refuse to serve replicas with a certificate primaries would reject: without serverAuth
    (BoringSSL: "unsupported certificate purpose") or without this host's replica server name."""
    _, chain, _ = ident.pems()
    cert = x509.load_pem_x509_certificates(chain)[0]
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        usages, names = x509.ExtendedKeyUsage([]), []
    if ExtendedKeyUsageOID.SERVER_AUTH not in usages or replica_server_name(ident.name) not in names:
        raise InvalidConfig(f"replica_listen is set, but the certificate of agent {ident.name} cannot serve "
                            "replicas: it was registered without --address",
                            action="Register the agent again with 'asr-agent register --force --address NAME' "
                                   "(the names primaries reach this host by), then start it.")


class _Pairing(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
               grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the pairing id to every call's metadata."""

    def __init__(self, pairing_id: str) -> None:
        self.pairing_id = pairing_id

    def _details(self, details: Any) -> Any:
        meta = list(details.metadata or []) + [(PAIRING_METADATA, self.pairing_id)]
        return details._replace(metadata=meta) if hasattr(details, "_replace") else _Details(details, meta)

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, base: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class ReplicaChannels:
    """One pair of channels (calls, and uploads on a connection of their own) per replica
    target, made on first use and closed at stop."""

    def __init__(self, ident: SiteIdentity, proxy: ProxyUrl | None) -> None:
        self.ident = ident
        self.proxy = proxy
        self._open: dict[tuple[str, str, str], tuple[grpc.Channel, grpc.Channel, _Rpc, grpc.Channel]] = {}
        self._lock = threading.Lock()

    def rpc(self, recovery_host: str, address: str, pairing_id: str) -> _Rpc:
        return self._get(recovery_host, address, pairing_id)[2]

    def channel(self, recovery_host: str, address: str, pairing_id: str) -> grpc.Channel:
        """The calls channel to a recovery host, carrying the pairing id (failback's Diff)."""
        return self._get(recovery_host, address, pairing_id)[3]

    def _get(self, recovery_host: str, address: str, pairing_id: str
             ) -> tuple[grpc.Channel, grpc.Channel, _Rpc, grpc.Channel]:
        key = (recovery_host, address, pairing_id)
        with self._lock:
            got = self._open.get(key)
            if got is None:
                _, chain, private = self.ident.pems()
                ca = vault_ca_pem(self.ident)
                inter = _Pairing(pairing_id)
                calls = client_channel(address, ca, chain, private, self.proxy,
                                       server_name=replica_server_name(recovery_host))
                bulk = client_channel(address, ca, chain, private, self.proxy, own_connection=True,
                                      server_name=replica_server_name(recovery_host))
                paired = grpc.intercept_channel(calls, inter)
                # the cycle's calls carry the pairing id as metadata themselves (no interceptor
                # layer on the upload path); failback's and re-protect's stubs use ``paired``
                rpc = _Rpc(calls, address, bulk, peer=f"the recovery host {recovery_host} at {address}",
                           metadata=((PAIRING_METADATA, pairing_id),))
                got = (calls, bulk, rpc, paired)
                self._open[key] = got
            return got

    def close(self) -> None:
        with self._lock:
            for calls, bulk, _, _ in self._open.values():
                calls.close()
                bulk.close()
            self._open.clear()
