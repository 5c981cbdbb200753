"""The trust of site-to-site connections (agent/replica/channel.py): the vault CA is taken
from the identity chain, and a recovery host refuses to serve with a certificate primaries
would reject (issued without ``asr-agent register --address``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.replica.channel import check_can_serve, vault_ca_pem
from asrerrors import InvalidConfig
from certs import pki
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
    ident, _ = identity(tmp_path, ["hv02", "127.0.0.1"])
    check_can_serve(ident)
    other, _ = identity(tmp_path / "x", ["127.0.0.1"])      # the host's own name is required
    with pytest.raises(InvalidConfig):
        check_can_serve(other)
