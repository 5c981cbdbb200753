"""Authorisation on every RPC, from the peer certificate.

A server interceptor wraps each method handler: it reads the client certificate from the
TLS auth context, derives the :class:`certs.identity.Identity`, checks the method's allowed
roles (default deny: a method missing from the table is refused) and lets the service
check revocation and vault. Its refusals (NotAuthenticated, PermissionDenied,
CertificateRevoked) carry a last detail ``REFUSED_AT <method>``. The identity is then available to the servicer through
:func:`current_identity`. AsrErrors raised by servicers become gRPC statuses with details.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from asrchannel.status import abort
from asrerrors import AsrError, NotAuthenticated, PermissionDenied
from asrops.metrics import RPC_SECONDS, RPCS
from certs.identity import Identity, from_pem

log = logging.getLogger(__name__)

PUBLIC = "public"
# The last ErrorDetail.details entry of every refusal made here (not by a servicer).
REFUSED_AT = "refused by authorisation at"
_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("asr_identity", default=None)


def current_identity() -> Identity:
    ident = _identity.get()
    if ident is None:
        raise NotAuthenticated("this call requires a client certificate")
    return ident


def peer_identity(context: grpc.ServicerContext) -> Identity | None:
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert")
    if not pems:
        return None
    return _parsed(pems[0])


@functools.lru_cache(maxsize=256)
def _parsed(pem: bytes) -> Identity:
    """A peer's identity, parsed once per certificate: an agent calls ``Missing`` hundreds of
    times a second, and parsing X.509 each time cost more than the call itself. Only the
    parse is cached; revocation is checked on every call (``check`` in AuthInterceptor)."""
    return from_pem(pem)


class AuthInterceptor(grpc.ServerInterceptor):
    """``policy`` maps full method names ("/asr.v1.Operator/CreateVault") or service
    prefixes ("/asr.v1.Operator/") to the allowed roles, or to {PUBLIC}."""

    def __init__(
        self,
        policy: dict[str, set[str]],
        check: Callable[[Identity, str], None],
    ) -> None:
        self.policy = policy
        self.check = check

    def _roles(self, method: str) -> set[str] | None:
        if method in self.policy:
            return self.policy[method]
        service = method.rsplit("/", 1)[0] + "/"
        return self.policy.get(service)

    def _authorise(self, method: str, context: grpc.ServicerContext) -> Identity | None:
        try:
            return self._decide(method, context)
        except AsrError as err:
            # Say where the refusal came from: an operator reading the error learns which
            # method was refused, and tests tell it from a servicer's own PermissionDenied.
            err.details = (*err.details, f"{REFUSED_AT} {method}")
            raise

    def _decide(self, method: str, context: grpc.ServicerContext) -> Identity | None:
        roles = self._roles(method)
        if roles is None:
            raise PermissionDenied(f"method {method} is not exposed")
        if PUBLIC in roles:
            return None
        ident = peer_identity(context)
        if ident is None:
            raise NotAuthenticated(
                f"{method} requires a client certificate issued by this service",
            )
        if ident.role not in roles:
            raise PermissionDenied(
                f"a {ident.role} certificate may not call {method.rsplit('/', 1)[-1]}",
                causes=(f"{method} is allowed for: {', '.join(sorted(roles))}.",),
            )
        self.check(ident, method)
        return ident

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method

        def guard(fn: Callable[..., Any], streaming_response: bool) -> Callable[..., Any]:
            def unary_out(request: Any, context: grpc.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    ident = self._authorise(method, context)
                    token = _identity.set(ident)
                    try:
                        result = fn(request, context)
                    finally:
                        _identity.reset(token)
                    RPCS.labels(method, "OK").inc()
                    RPC_SECONDS.labels(method).observe(time.perf_counter() - started)
                    return result
                except AsrError as err:
                    log.info("rpc %s refused: %s %s", method, err.code, err)
                    RPCS.labels(method, err.code).inc()
                    abort(context, err)
                except Exception as exc:  # noqa: BLE001 - last line before the wire
                    if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortError":
                        raise
                    log.exception("rpc %s failed", method)
                    abort(context, AsrError(f"internal error in {method}: {exc}"))

            def stream_out(request: Any, context: grpc.ServicerContext) -> Iterable[Any]:
                try:
                    ident = self._authorise(method, context)
                    token = _identity.set(ident)
                    try:
                        yield from fn(request, context)
                    finally:
                        _identity.reset(token)
                except AsrError as err:
                    log.info("rpc %s refused: %s %s", method, err.code, err)
                    abort(context, err)
                except Exception as exc:  # noqa: BLE001
                    if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortError":
                        raise
                    log.exception("rpc %s failed", method)
                    abort(context, AsrError(f"internal error in {method}: {exc}"))

            return stream_out if streaming_response else unary_out

        if handler.unary_unary:
            return handler._replace(unary_unary=guard(handler.unary_unary, False))
        if handler.unary_stream:
            return handler._replace(unary_stream=guard(handler.unary_stream, True))
        if handler.stream_unary:
            return handler._replace(stream_unary=guard(handler.stream_unary, False))
        if handler.stream_stream:
            return handler._replace(stream_stream=guard(handler.stream_stream, True))
        return handler
