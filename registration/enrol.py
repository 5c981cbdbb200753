"""Registering with a vault using a registration key file."""

from __future__ import annotations

import os
from typing import Any

import grpc

from asrchannel.endpoints import MOVE_ON, wait_connected
from asrchannel.proxy import ProxyUrl
from asrchannel.status import from_rpc_error
from asrchannel.tls import CONNECT_TIMEOUT_S, client_channel
from asrclock import Clock
from asrerrors import AlreadyExists, AsrError, Unreachable
from asrpb import registration_pb2, registration_pb2_grpc
from certs import keyfile
from certs.pki import key_to_pem, make_csr, new_key
from registration.state import SiteIdentity

VERSION = "0.1.0"
# how long a registration endpoint may take to accept a connection (TCP, the proxy's CONNECT,
# TLS) before the next is tried: the attempt's own limit (a silent address)
CONNECT_WAIT_S = CONNECT_TIMEOUT_S


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
    request = registration_pb2.RegisterRequest(
        vault_id=key.vault_id, role=role, name=name, csr_pem=csr, secret=key.secret,
        force=force, version=VERSION, encryption=encryption,
        key_fingerprint=key_fingerprint, provider=provider, addresses=addresses or [],
    )
    res = _register_first_answering(key.registration_endpoints, key.service_ca_pem.encode(), proxy, request, timeout)
    ident = SiteIdentity(
        state_dir=state_dir, vault_id=key.vault_id, vault_name=res.vault_name, role=role, name=name,
        identity=res.identity, registered_at=clock.now(),
        endpoints={"api": key.api_endpoints, "registration": key.registration_endpoints},
        provider=provider, provider_address=provider_address, encryption=encryption,
    )
    ident.save(res.service_ca_pem, res.certificate_pem, key_to_pem(private))
    return ident


def _register_first_answering(targets: list[str], ca: bytes, proxy: ProxyUrl | None,
                              request: registration_pb2.RegisterRequest, timeout: float) -> Any:
    """Register at the first endpoint that answers, in the key file's order. What moves on is
    what shows the request was not handled there: no connection within CONNECT_WAIT_S (a
    silent address), or UNAVAILABLE (refused, reset, the proxy's CONNECT refused). Any answer,
    a refusal too, is final; and so is a timeout once connected, since the cloud may have
    registered the server (registering again then needs --force)."""
    errors: list[AsrError] = []
    for target in targets:
        channel = client_channel(target, ca, proxy=proxy)
        try:
            if wait_connected(channel, CONNECT_WAIT_S) is None:
                errors.append(Unreachable(f"the cloud service at {target} is unreachable: no connection within "
                                          f"{CONNECT_WAIT_S:g} s"))
                continue
            return registration_pb2_grpc.RegistrationStub(channel).Register(request, timeout=timeout)
        except grpc.RpcError as exc:
            err = from_rpc_error(exc, f"the cloud service at {target}")
            if exc.code() not in MOVE_ON:
                raise err from exc
            errors.append(err)
        finally:
            channel.close()
    if len(errors) == 1:
        raise errors[0]
    raise Unreachable(f"no registration endpoint answered ({len(targets)} tried)",
                      details=[str(e) for e in errors])
