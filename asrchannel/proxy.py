"""HTTP CONNECT proxy settings.

grpcio logs and then silently ignores a proxy value it cannot parse, and connects directly
(FIELD-NOTES "gRPC through a proxy"): a DR site whose firewall only allows the proxy would
then fail in confusing ways, or, worse, bypass an auditing proxy. So every proxy URL is
validated here and a malformed one is an error, never a silent direct connection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from asrerrors import InvalidProxy


@dataclass(frozen=True)
class ProxyUrl:
    host: str
    port: int
    user: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f"{self.user}:{self.password}@" if self.user is not None else ""
        return f"http://{auth}{self.host}:{self.port}"

    @property
    def redacted(self) -> str:
        """For logs and output: the password never appears."""
        auth = f"{self.user}:***@" if self.user is not None else ""
        return f"http://{auth}{self.host}:{self.port}"


def parse_proxy(value: str) -> ProxyUrl:
    shown = value.split("@")[-1]
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise InvalidProxy(f"proxy URL ...{shown!r} is malformed: {exc}") from exc
    if parts.scheme != "http":
        raise InvalidProxy(
            f"proxy URL ...{shown!r} must start with http:// (got scheme {parts.scheme!r})"
        )
    if not parts.hostname or port is None:
        raise InvalidProxy(f"proxy URL ...{shown!r} must name a host and a port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidProxy(f"proxy URL ...{shown!r} must not have a path, query or fragment")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if user is not None and password is None:
        raise InvalidProxy(f"proxy URL ...{shown!r} names a user without a password")
    return ProxyUrl(parts.hostname, port, user, password)


def channel_options(proxy: ProxyUrl | None) -> list[tuple[str, object]]:
    """gRPC channel options for a proxy (or for none: the environment is ignored)."""
    if proxy is None:
        # Only our own configuration decides; an inherited https_proxy must not either.
        return [("grpc.enable_http_proxy", 0)]
    # no_proxy overrides even the explicit channel option, and loopback targets are
    # typical in tests and on a single-box site; the configured proxy must win.
    for var in ("no_proxy", "NO_PROXY", "no_grpc_proxy"):
        os.environ.pop(var, None)
    return [("grpc.enable_http_proxy", 1), ("grpc.http_proxy", proxy.url)]
