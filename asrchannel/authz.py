"""Authorisation on every RPC, from the peer certificate.

A server interceptor wraps each method handler: it reads the client certificate from the
TLS auth context, derives the :class:`certs.identity.Identity`, checks the method's allowed
roles (default deny: a method missing from the table is refused) and lets the service
check revocation and vault. Its refusals (NotAuthenticated, PermissionDenied,
CertificateRevoked) carry a last detail ``REFUSED_AT <method>``. The identity is then available to the servicer through
:func:`current_identity`. AsrErrors raised by servicers become gRPC statuses with details.
Every call is counted and timed on the way (``asrops.metrics.RpcMetrics``): its gRPC status,
failed calls included, and the ASR code of a failure.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from asrchannel.status import abort, grpc_code
from asrerrors import AsrError, NotAuthenticated, PermissionDenied
from asrops.metrics import RpcCall, RpcMetrics
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
        metrics: RpcMetrics | None = None,
    ) -> None:
        self.policy = policy
        self.check = check
        # the daemon's gRPC server metrics (asrops.metrics); a private set when none is given
        self.metrics = metrics if metrics is not None else RpcMetrics(CollectorRegistry())

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
        metrics = self.metrics

        def guard(fn: Callable[..., Any], request_streaming: bool, response_streaming: bool) -> Callable[..., Any]:
            def prepare(request: Any, call: RpcCall) -> Any:
                if request_streaming:
                    return call.counting_received(request)
                call.received()
                return request

            def failed(call: RpcCall, context: grpc.ServicerContext, exc: BaseException) -> None:
                """Record and answer a call that raised ``exc``; re-raises an abort already made."""
                if isinstance(exc, AsrError):
                    log.info("rpc %s refused: %s %s", method, exc.code, exc)
                    call.end(grpc_code(exc), exc.code)
                    abort(context, exc)
                # context.abort() raises a plain Exception after setting the call's code
                set_code = _set_code(context)
                if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortError" or (
                        set_code is not None and set_code != grpc.StatusCode.OK):
                    call.end(_context_code(context, grpc.StatusCode.UNKNOWN))
                    raise exc
                log.exception("rpc %s failed", method)
                err = AsrError(f"internal error in {method}: {exc}")
                call.end(grpc.StatusCode.INTERNAL, err.code)
                abort(context, err)

            def unary_out(request: Any, context: grpc.ServicerContext) -> Any:
                call = metrics.call(method, request_streaming, False)
                try:
                    ident = self._authorise(method, context)
                    token = _identity.set(ident)
                    try:
                        result = fn(prepare(request, call), context)
                    finally:
                        _identity.reset(token)
                except Exception as exc:  # noqa: BLE001 - last line before the wire
                    failed(call, context, exc)
                    raise  # failed() always raises; this satisfies the type checker
                call.sent()
                call.end(_context_code(context, grpc.StatusCode.OK))
                return result

            def stream_out(request: Any, context: grpc.ServicerContext) -> Iterable[Any]:
                call = metrics.call(method, request_streaming, True)
                try:
                    ident = self._authorise(method, context)
                    token = _identity.set(ident)
                    replies = fn(prepare(request, call), context)
                    try:
                        for reply in replies:
                            call.sent()
                            yield reply
                    finally:
                        # as ``yield from`` would: the servicer's generator runs its finally
                        # blocks (e.g. an export's pin) now, not when it is collected
                        close = getattr(replies, "close", None)
                        if close is not None:
                            close()
                        _identity.reset(token)
                except GeneratorExit:
                    # the client went away (or the server stopped) in the middle of the stream
                    call.end(grpc.StatusCode.CANCELLED)
                    raise
                except Exception as exc:  # noqa: BLE001
                    failed(call, context, exc)
                    raise
                call.end(_context_code(context, grpc.StatusCode.OK))

            return stream_out if response_streaming else unary_out

        if handler.unary_unary:
            return handler._replace(unary_unary=guard(handler.unary_unary, False, False))
        if handler.unary_stream:
            return handler._replace(unary_stream=guard(handler.unary_stream, False, True))
        if handler.stream_unary:
            return handler._replace(stream_unary=guard(handler.stream_unary, True, False))
        if handler.stream_stream:
            return handler._replace(stream_stream=guard(handler.stream_stream, True, True))
        return handler


def _set_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status a servicer set on its context (set_code, abort), if any."""
    try:
        code = context.code()  # type: ignore[attr-defined]
    except (AttributeError, NotImplementedError):
        return None
    return code if isinstance(code, grpc.StatusCode) else None


def _context_code(context: grpc.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    """The status a servicer set on its context; for a call no longer active (the client
    cancelled, or its deadline passed) Canceled or DeadlineExceeded; else ``default``."""
    code = _set_code(context)
    if code is not None:
        return code
    if not context.is_active():
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    return default

