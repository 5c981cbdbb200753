"""Registering with a vault using a registration key file."""

from __future__ import annotations

import os

import grpc

from asrchannel.proxy import ProxyUrl
from asrchannel.status import from_rpc_error
from asrchannel.tls import client_channel
from asrclock import Clock
from asrerrors import AlreadyExists
from asrpb import registration_pb2, registration_pb2_grpc
from certs import keyfile
from certs.pki import key_to_pem, make_csr, new_key
from registration.state import SiteIdentity

VERSION = "0.1.0"


def register(
    *,
    key_file: str,
    role: str,
    name: str,
    state_dir: str,
    clock: Clock,
    proxy: ProxyUrl | None = None,
    force: bool = False,
    encryption: bool = False,
    key_fingerprint: str = "",
    provider: str = "",
    provider_address: str = "",
    addresses: list[str] | None = None,
    timeout: float = 30.0,
) -> SiteIdentity:
    key = keyfile.read(key_file)
    key.check_valid(clock.now(), key_file)
    state_dir = os.path.abspath(state_dir)
    if os.path.exists(os.path.join(state_dir, "registration.json")) and not force:
        raise AlreadyExists(
            f"{state_dir} already holds a registration",
            action="Pass --force to register again and replace it.",
        )
    private = new_key()
    csr = make_csr(private, name)
    target = key.endpoints["registration"]
    channel = client_channel(target, key.service_ca_pem.encode(), proxy=proxy)
    try:
        stub = registration_pb2_grpc.RegistrationStub(channel)
        res = stub.Register(
            registration_pb2.RegisterRequest(
                vault_id=key.vault_id, role=role, name=name, csr_pem=csr, secret=key.secret,
                force=force, version=VERSION, encryption=encryption,
                key_fingerprint=key_fingerprint, provider=provider, addresses=addresses or [],
            ),
            timeout=timeout,
        )
    except grpc.RpcError as exc:
        raise from_rpc_error(exc, f"the cloud service at {target}") from exc
    finally:
        channel.close()
    ident = SiteIdentity(
        state_dir=state_dir, vault_id=key.vault_id, vault_name=res.vault_name, role=role, name=name,
        identity=res.identity, endpoints=dict(key.endpoints), registered_at=clock.now(),
        provider=provider, provider_address=provider_address, encryption=encryption,
    )
    ident.save(res.service_ca_pem, res.certificate_pem, key_to_pem(private))
    return ident
