"""The trust of site-to-site connections (agent/replica/channel.py): the vault CA is taken
from the identity chain, and a recovery host refuses to serve with a certificate primaries
would reject (issued without ``asr-agent register --address``)."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc
import pytest

from agent.replica.channel import ReplicaChannels, check_can_serve, vault_ca_pem
from asrchannel.tls import server_credentials
from asrerrors import AsrError, InvalidConfig
from asrpb import replication_pb2, replication_pb2_grpc
from certs import pki
from certs.identity import replica_server_name
from registration.state import SiteIdentity


def identity(root: Path, server_names: list[str] | None) -> tuple[SiteIdentity, pki.CertKey]:
    service = pki.create_ca("service")
    vault = pki.create_ca("vault", parent=service)
    key = pki.new_key()
    cert = pki.sign_client(vault, key.public_key(), "hv02", "spiffe://asr/vault/v1/agent/hv02",
                           server_names=server_names)
    ident = SiteIdentity(str(root), "v1", "contoso", "agent", "hv02", "spiffe://asr/vault/v1/agent/hv02", {}, 0.0)
    ident.save(service.cert_pem, pki.cert_pem(cert) + vault.cert_pem, pki.key_to_pem(key))
    return ident, vault


def test_the_vault_ca_is_the_last_certificate_of_the_chain(tmp_path: Path) -> None:
    ident, vault = identity(tmp_path, None)
    assert vault_ca_pem(ident) == vault.cert_pem


def test_a_client_only_certificate_cannot_serve_replicas(tmp_path: Path) -> None:
    ident, _ = identity(tmp_path, None)
    with pytest.raises(InvalidConfig, match="registered without --address"):
        check_can_serve(ident)


def test_a_certificate_registered_with_addresses_serves(tmp_path: Path) -> None:
    ident, _ = identity(tmp_path, [replica_server_name("hv02"), "127.0.0.1"])
    check_can_serve(ident)
    # the bare host name is not enough: a provider registered with --address hv02 has it too
    other, _ = identity(tmp_path / "x", ["hv02", "127.0.0.1"])
    with pytest.raises(InvalidConfig):
        check_can_serve(other)


def _serve(root: Path, vault: pki.CertKey, role: str, server_names: list[str]) -> tuple[grpc.Server, int]:
    """A TLS server presenting a certificate of ``vault`` (role ``role``, the given SANs) that
    answers every Replication call UNIMPLEMENTED: reaching it means the handshake passed."""
    key = pki.new_key()
    cert = pki.sign_client(vault, key.public_key(), "x", f"spiffe://asr/vault/v1/{role}/hv02",
                           server_names=server_names)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    replication_pb2_grpc.add_ReplicationServicer_to_server(replication_pb2_grpc.ReplicationServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(
        pki.cert_pem(cert) + vault.cert_pem, pki.key_to_pem(key), vault.cert_pem))
    server.start()
    return server, port


def _reach(ident: SiteIdentity, port: int) -> str:
    channels = ReplicaChannels(ident, None)
    try:
        channels.rpc("hv02", f"127.0.0.1:{port}", "pr-1")("CheckEpoch", replication_pb2.EpochCheck(vm_id="v"),
                                                             timeout=10)
        return "answered"
    except AsrError as exc:
        return "handshake passed" if "not implemented" in exc.message.lower() else f"refused: {exc.message}"
    finally:
        channels.close()


def test_only_the_recovery_hosts_agent_certificate_answers_for_it(tmp_path: Path) -> None:
    """Regression: primaries checked the bare host name, which a provider of the vault
    registered with ``--address hv02`` also carries; now they require the reserved name only
    the registrar gives an agent of that host."""
    primary, vault = identity(tmp_path / "primary", None)
    impostor, port = _serve(tmp_path, vault, "provider", ["hv02", "127.0.0.1", "localhost"])
    try:
        assert _reach(primary, port).startswith("refused"), "a provider certificate naming hv02 was accepted"
    finally:
        impostor.stop(None)
    genuine, port = _serve(tmp_path, vault, "agent", [replica_server_name("hv02"), "127.0.0.1"])
    try:
        assert _reach(primary, port) == "handshake passed"
    finally:
        genuine.stop(None)

