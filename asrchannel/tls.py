"""TLS channels and servers.

Every connection is gRPC over TLS; clients always pass ``root_certificates`` (the machine may
set GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, and we pin our own CA anyway). Keepalive is on so a
dead peer on a long-lived stream is noticed within a minute.
"""

from __future__ import annotations

import grpc

from asrchannel.proxy import ProxyUrl, channel_options

MAX_MESSAGE = 64 * 1024 * 1024

# How long one connection attempt may take: TCP, the proxy's CONNECT, TLS and HTTP/2's
# settings, about four round trips. gRPC reads it from ``min_reconnect_backoff_ms`` (the
# MIN_CONNECT_TIMEOUT of its connection-backoff spec; an attempt gets the larger of it and the
# current backoff). It was 0.5 s here, with the backoff: every attempt over a link of 0.3 s
# round trip failed, and so did registration through a tinyproxy slowed by load (CI, 3 s).
# A silent address now costs this long before the next endpoint is tried.
CONNECT_TIMEOUT_S = 10.0

_COMMON: list[tuple[str, object]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # A site that lost its link must notice the cloud (or proxy) is back within seconds,
    # not after gRPC's default backoff of up to two minutes: attempts start 0.5 s apart at
    # first, at most 5 s apart.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.min_reconnect_backoff_ms", int(CONNECT_TIMEOUT_S * 1000)),
]


def client_channel(
    target: str,
    ca_pem: bytes,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    proxy: ProxyUrl | None = None,
    own_connection: bool = False,
    server_name: str | None = None,
) -> grpc.Channel:
    """``own_connection``: never share a TCP connection with other channels to the same
    target. The agent sends its bulk uploads this way: on a shared connection a small call
    (``Missing``) waits behind megabytes of stream frames (measured: 8-9 ms p50 instead of
    ~4 ms while a stream runs).

    ``server_name``: the name the server's certificate must carry (a DNS SAN), when it is not
    the target's host: an agent dials a recovery host by address and checks its host name."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )
    options = list(_COMMON) + channel_options(proxy)
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, creds, options=options)


def server_options() -> list[tuple[str, object]]:
    return list(_COMMON) + [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.so_reuseport", 0),
    ]


def server_credentials(
    cert_pem: bytes, key_pem: bytes, client_ca_pem: bytes | None
) -> grpc.ServerCredentials:
    """mTLS when ``client_ca_pem`` is given (client certificate required and verified);
    otherwise server authentication only (the registration port)."""
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=client_ca_pem,
        require_client_auth=client_ca_pem is not None,
    )
