"""Issue 12: gRPC server metrics recorded by the interceptor every server uses
(``asrchannel.authz.AuthInterceptor``), on a real gRPC server on loopback: ``grpc_code`` is
the gRPC status (not the ASR code), failed calls are timed, internal errors are counted,
streams count their messages and their end, and the ASR code has its own label."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from asrchannel.authz import PUBLIC, AuthInterceptor
from asrerrors import NotFound
from asrops.metrics import RpcMetrics
from tests.harness import free_port, wait_for
from tests.observe.scrape import Samples, promtool_check, samples, value


def _ok(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def _missing(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise NotFound("no such thing")


def _boom(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RuntimeError("a servicer bug")


def _deny(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "the servicer said no")
    return b""


def _three(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for i in range(3):
        yield bytes([i])


def _sum(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    return bytes([sum(len(r) for r in requests)])


def _forever(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    while context.is_active():
        yield b"x"
        time.sleep(0.01)


@pytest.fixture
def served() -> Iterator[tuple[grpc.Channel, CollectorRegistry]]:
    registry = CollectorRegistry()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         interceptors=[AuthInterceptor({"/test.Svc/": {PUBLIC}}, lambda i, m: None,
                                                       RpcMetrics(registry))])
    handlers: dict[str, Any] = {
        "Ok": grpc.unary_unary_rpc_method_handler(_ok), "Missing": grpc.unary_unary_rpc_method_handler(_missing),
        "Boom": grpc.unary_unary_rpc_method_handler(_boom), "Deny": grpc.unary_unary_rpc_method_handler(_deny),
        "Three": grpc.unary_stream_rpc_method_handler(_three), "Sum": grpc.stream_unary_rpc_method_handler(_sum),
        "Forever": grpc.unary_stream_rpc_method_handler(_forever),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Svc", handlers),))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, registry
    finally:
        channel.close()
        server.stop(grace=1).wait()


def _scrape(registry: CollectorRegistry) -> Samples:
    return samples(generate_latest(registry).decode())


def test_every_call_is_counted_by_grpc_status_and_timed(served: tuple[grpc.Channel, CollectorRegistry]) -> None:
    channel, registry = served
    ok = channel.unary_unary("/test.Svc/Ok")
    for _ in range(2):
        assert ok(b"hi", timeout=10) == b"hi"
    codes = {}
    for method in ("Missing", "Boom", "Deny"):
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(f"/test.Svc/{method}")(b"", timeout=10)
        codes[method] = info.value.code()
    assert codes == {"Missing": grpc.StatusCode.NOT_FOUND, "Boom": grpc.StatusCode.INTERNAL,
                     "Deny": grpc.StatusCode.PERMISSION_DENIED}
    assert list(channel.unary_stream("/test.Svc/Three")(b"", timeout=10)) == [b"\0", b"\1", b"\2"]
    assert channel.stream_unary("/test.Svc/Sum")(iter([b"ab", b"c", b"", b"d"]), timeout=10) == bytes([4])

    s = _scrape(registry)
    handled = "grpc_server_handled_total"
    assert value(s, handled, grpc_method="Ok", grpc_code="OK", grpc_type="unary", grpc_service="test.Svc") == 2
    assert value(s, handled, grpc_method="Missing", grpc_code="NotFound") == 1
    assert value(s, handled, grpc_method="Boom", grpc_code="Internal") == 1      # a servicer bug is counted
    assert value(s, handled, grpc_method="Deny", grpc_code="PermissionDenied") == 1
    assert value(s, handled, grpc_method="Three", grpc_code="OK", grpc_type="server_stream") == 1
    assert value(s, handled, grpc_method="Sum", grpc_code="OK", grpc_type="client_stream") == 1
    # failed calls have their latency too, in a series of their own
    for method, code in (("Missing", "NotFound"), ("Boom", "Internal"), ("Deny", "PermissionDenied"), ("Ok", "OK")):
        n = 2 if method == "Ok" else 1
        assert value(s, "grpc_server_handling_seconds_count", grpc_method=method, grpc_code=code) == n
        assert value(s, "grpc_server_handling_seconds_bucket", grpc_method=method, grpc_code=code, le="+Inf") == n
    # the ASR code of a failure keeps its own label; the code label is gRPC's
    assert value(s, "asr_rpc_errors_total", grpc_method="Missing", grpc_code="NotFound", asr_code="ASR-0040") == 1
    assert value(s, "asr_rpc_errors_total", grpc_method="Boom", grpc_code="Internal", asr_code="ASR-0001") == 1
    assert value(s, "asr_rpc_errors_total", grpc_method="Deny") is None       # no ASR error: no ASR code
    assert value(s, "grpc_server_started_total", grpc_method="Ok") == 2
    assert value(s, "grpc_server_msg_sent_total", grpc_method="Three") == 3
    assert value(s, "grpc_server_msg_received_total", grpc_method="Sum") == 4
    assert value(s, "grpc_server_msg_received_total", grpc_method="Ok") == 2
    promtool_check(generate_latest(registry).decode())


def test_a_stream_the_client_cancels_ends_as_canceled(served: tuple[grpc.Channel, CollectorRegistry]) -> None:
    channel, registry = served
    stream = channel.unary_stream("/test.Svc/Forever")(b"", timeout=30)
    assert next(stream) == b"x" and next(stream) == b"x"
    stream.cancel()
    wait_for(lambda: value(_scrape(registry), "grpc_server_handled_total", grpc_method="Forever",
                           grpc_code="Canceled") == 1, 30, what="the cancelled stream counted")
    s = _scrape(registry)
    assert value(s, "grpc_server_handled_total", grpc_method="Forever", grpc_code="OK") is None
    assert (value(s, "grpc_server_msg_sent_total", grpc_method="Forever") or 0) >= 2
