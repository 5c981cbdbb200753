"""Prometheus metrics: each daemon's registry, its /metrics endpoint, and gRPC server metrics.

Each daemon's composition root makes one :class:`Metrics` (a registry of its own, with the
standard ``process_*`` and ``python_*`` collectors), registers its domain collectors on it
and serves it on ``metrics_listen`` (``HOST:PORT``; off when empty), plain HTTP: bind it to
a management address. Names follow Prometheus conventions: ``asr_`` prefix for our own
figures, base units (seconds, bytes), ``_total`` for counters.

gRPC server metrics use the names and labels of go-grpc-prometheus, so existing dashboards
and alerts work unchanged::

    grpc_server_started_total{grpc_type, grpc_service, grpc_method}
    grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}
    grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method, grpc_code}   histogram
    grpc_server_msg_received_total / grpc_server_msg_sent_total{grpc_type, grpc_service, grpc_method}
    asr_rpc_errors_total{grpc_service, grpc_method, grpc_code, asr_code}

``grpc_code`` is the gRPC status code as Go spells it (``OK``, ``NotFound``, ``Internal``...);
every call that ends is counted and timed, failed ones too (the histogram carries
``grpc_code`` so failures' latency is its own series); an internal error (a servicer bug) is
``Internal`` with ``asr_code="ASR-0001"``. ``asr_rpc_errors_total`` keeps the ASR error code
of every call that failed with one. py-grpc-prometheus was considered: it counts no outcome
for streaming calls, counts every streamed message as both sent and received and reads
private grpc state, so the one interceptor that already wraps every call
(``asrchannel.authz``) records these instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from asrerrors import InvalidConfig

T = TypeVar("T")

# Go's names of the gRPC status codes (google.golang.org/grpc/codes), as go-grpc-prometheus labels them.
GO_CODE_NAMES = {
    grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled", grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument", grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound", grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied", grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition", grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange", grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal", grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss", grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
# seconds: from a cached Missing call (~1 ms) to a commit of a large point or a long stream
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LISTEN_ALLOWED = 'a "HOST:PORT" string with a port from 1 to 65535, e.g. "127.0.0.1:9464"'


def listen_problem(value: str) -> str:
    """Why ``value`` is not a HOST:PORT to listen on, or "" when it is."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"metrics_listen must be {LISTEN_ALLOWED}"
    return ""


def grpc_type(request_streaming: bool, response_streaming: bool) -> str:
    if request_streaming and response_streaming:
        return "bidi_stream"
    if request_streaming:
        return "client_stream"
    return "server_stream" if response_streaming else "unary"


def split_method(full: str) -> tuple[str, str]:
    """("asr.v1.Operator", "ListVaults") of "/asr.v1.Operator/ListVaults"."""
    service, _, method = full.lstrip("/").rpartition("/")
    return service, method


class RpcMetrics:
    """The gRPC server metrics of one daemon (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        base = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started_total", "RPCs started on the server", base, registry=registry)
        self.handled = Counter("grpc_server_handled_total", "RPCs completed on the server, by gRPC status code",
                               [*base, "grpc_code"], registry=registry)
        self.seconds = Histogram("grpc_server_handling_seconds",
                                 "Time from an RPC's start to its end (the last message of a stream), failed "
                                 "calls included", [*base, "grpc_code"], buckets=RPC_BUCKETS, registry=registry)
        self.received = Counter("grpc_server_msg_received_total", "Messages received from clients", base,
                                registry=registry)
        self.sent = Counter("grpc_server_msg_sent_total", "Messages sent to clients", base, registry=registry)
        self.errors = Counter("asr_rpc_errors_total", "RPCs that failed with an ASR error code",
                              ["grpc_service", "grpc_method", "grpc_code", "asr_code"], registry=registry)

    def call(self, method: str, request_streaming: bool, response_streaming: bool) -> RpcCall:
        """Count an RPC's start; the returned :class:`RpcCall` records its messages and end."""
        return RpcCall(self, method, grpc_type(request_streaming, response_streaming))


class RpcCall:
    def __init__(self, metrics: RpcMetrics, method: str, kind: str) -> None:
        self.metrics = metrics
        self.service, self.method = split_method(method)
        self.labels = (kind, self.service, self.method)
        self.started = time.perf_counter()
        self.ended = False
        metrics.started.labels(*self.labels).inc()

    def received(self, n: int = 1) -> None:
        self.metrics.received.labels(*self.labels).inc(n)

    def sent(self, n: int = 1) -> None:
        self.metrics.sent.labels(*self.labels).inc(n)

    def counting_received(self, requests: Iterator[T]) -> Iterator[T]:
        for r in requests:
            self.received()
            yield r

    def end(self, code: grpc.StatusCode, asr_code: str = "") -> None:
        """The call ended with ``code`` (once; later calls are ignored)."""
        if self.ended:
            return
        self.ended = True
        name = GO_CODE_NAMES.get(code, "Unknown")
        self.metrics.handled.labels(*self.labels, name).inc()
        self.metrics.seconds.labels(*self.labels, name).observe(time.perf_counter() - self.started)
        if asr_code:
            self.metrics.errors.labels(self.service, self.method, name, asr_code).inc()


class Metrics:
    """One daemon's registry and its HTTP endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.rpc = RpcMetrics(self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def serve(self, listen: str, source: str = "the configuration") -> None:
        """Serve /metrics on ``listen`` (HOST:PORT) from a daemon thread; nothing when empty.
        A malformed address or one that cannot be bound is InvalidConfig naming ``source``."""
        if not listen:
            return
        problem = listen_problem(listen)
        if problem:
            raise InvalidConfig(f"{source}: metrics_listen = {listen!r} is not allowed: {problem}",
                                action=f"Correct metrics_listen in {source}, or remove it to serve no metrics.")
        host, _, port = listen.rpartition(":")
        try:
            self._server, self._thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        except OSError as exc:
            raise InvalidConfig(f"{source}: metrics_listen = {listen!r} cannot be used: {exc.strerror or exc}",
                                causes=("Another process listens on that port.",
                                        "The host is not an address of this machine."),
                                action=f"Choose a free port on a local address for metrics_listen in {source}.",
                                ) from exc
        self.address = self._server.server_address[:2]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


__all__ = ["GO_CODE_NAMES", "LISTEN_ALLOWED", "Metrics", "RpcCall", "RpcMetrics", "grpc_type", "listen_problem",
           "split_method"]
