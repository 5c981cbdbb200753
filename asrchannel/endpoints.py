"""Several cloud endpoints: which one a client dials, and when it moves to another.

Several ``asr-cloudsvc serve`` processes may serve the same vaults (any one answers any
call); key files and registrations list all of their addresses. A client follows a
documented order rather than gRPC's own multi-address targets: those need ``ipv4:``/
``ipv6:`` targets of literal addresses, while ours are host names that must match the
server certificate and that an HTTP CONNECT proxy resolves (FIELD-NOTES "gRPC through a
proxy"), and through a proxy grpcio 1.85 sends ``CONNECT [A,B]:443`` for such a target
(measured with tinyproxy): one ``HOST:PORT`` per channel keeps both working.

The order (:class:`EndpointOrder`):

- start with the first endpoint of the list;
- stick to the current one as long as it answers;
- when a call on it fails at the transport level (UNAVAILABLE: refused, reset, proxy
  CONNECT refused; or a heartbeat's DEADLINE_EXCEEDED: a silent address), move to the next,
  wrapping round after the last;
- once every endpoint failed in a row (a full round), wait before the next attempt: 0.5 s,
  doubling every further round, at most 5 s (gRPC's own reconnect backoff is capped there
  too, so waiting longer would not find a healed cloud sooner). A success resets it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from asrerrors import AsrError, InvalidConfig

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 5.0

# The transport failures that move a client to the next endpoint. Any other status (even
# INTERNAL) was an answer from a live service: moving would not help.
MOVE_ON = frozenset({grpc.StatusCode.UNAVAILABLE})


def check_endpoints(value: Any, where: str, action: str, error: type[AsrError] = InvalidConfig) -> list[str]:
    """``value`` as a list of ``HOST:PORT`` strings; a bare string is a list of one (the format
    of older key files and registrations). Empty or malformed: ``error`` (InvalidConfig,
    ASR-0014, unless the caller's input is of another kind) naming ``where`` (the key, e.g.
    ``endpoints.api in FILE``) and ``action``."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise error(f"{where} must be a non-empty list of \"HOST:PORT\" strings, not {value!r}", action=action)
    for item in items:
        if not isinstance(item, str) or not is_hostport(item):
            raise error(f"{where} holds {item!r}, which is not \"HOST:PORT\" with a port from 1 to 65535",
                             action=action)
    return list(dict.fromkeys(items))   # a repeated endpoint would only be tried twice in a round


def is_hostport(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host.strip("[]") and port.isdigit() and 0 < int(port) < 65536)


def wait_connected(channel: grpc.Channel, timeout: float) -> grpc.ChannelConnectivity | None:
    """Connect ``channel`` and wait until it is READY or has failed (TRANSIENT_FAILURE: refused,
    the proxy's CONNECT refused, a TLS handshake that failed); None when neither happened
    within ``timeout``: a silent address, where any call would wait for its whole deadline.
    A call made after TRANSIENT_FAILURE fails at once with the connection's own error."""
    states: queue.SimpleQueue[grpc.ChannelConnectivity] = queue.SimpleQueue()
    channel.subscribe(states.put, try_to_connect=True)
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            state = states.get(timeout=left)
            if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                         grpc.ChannelConnectivity.SHUTDOWN):
                return state
    except queue.Empty:
        pass
    finally:
        channel.unsubscribe(states.put)
    return None


class EndpointOrder:
    """The current endpoint of a list, moved on by reported failures (thread-safe).

    ``clock``: seconds, monotonic (tests inject their own)."""

    def __init__(self, endpoints: Sequence[str], clock: Callable[[], float] = time.monotonic,
                 backoff_min: float = BACKOFF_MIN_S, backoff_max: float = BACKOFF_MAX_S) -> None:
        if not endpoints:
            raise ValueError("an endpoint order needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.clock = clock
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._index = 0
        self._failures = 0          # in a row, since the last success
        self._not_before = 0.0
        self._lock = threading.Lock()

    @property
    def current(self) -> str:
        with self._lock:
            return self.endpoints[self._index]

    def succeeded(self, endpoint: str) -> None:
        with self._lock:
            if endpoint == self.endpoints[self._index]:
                self._failures = 0
                self._not_before = 0.0

    def failed(self, endpoint: str) -> int:
        """A transport failure on ``endpoint``: the failures in a row counting this one when the
        client moved, 0 when it did not (another caller moved already: failures of calls made
        before the move are not counted twice)."""
        with self._lock:
            if endpoint != self.endpoints[self._index]:
                return 0
            self._failures += 1
            self._index = (self._index + 1) % len(self.endpoints)
            rounds, within = divmod(self._failures, len(self.endpoints))
            if within:          # the round goes on: the next endpoint at once
                self._not_before = 0.0
            else:               # every endpoint failed once more: back off before the next round
                backoff = min(self.backoff_max, self.backoff_min * 2 ** (rounds - 1))
                self._not_before = self.clock() + backoff
            return self._failures

    def replace(self, endpoints: Sequence[str]) -> None:
        """A new list (the cloud announced it): stay on the current endpoint if it is still
        listed, else start from the first; the failures counted so far were of the old list."""
        if not endpoints:
            raise ValueError("an endpoint order needs at least one endpoint")
        with self._lock:
            current = self.endpoints[self._index]
            self.endpoints = list(endpoints)
            self._index = self.endpoints.index(current) if current in self.endpoints else 0
            self._failures = 0
            self._not_before = 0.0

    def wait(self) -> float:
        """Seconds to wait before trying the current endpoint (0 while a round is not over)."""
        with self._lock:
            return max(0.0, self._not_before - self.clock())


def _multicallable(kind: str, streaming_response: bool) -> Any:
    def make(self: FailoverChannel, method: str, request_serializer: Any = None, response_deserializer: Any = None,
             _registered_method: bool = False) -> Any:
        return _FailoverCallable(self, kind, method, request_serializer, response_deserializer, streaming_response)
    return make


class FailoverChannel(grpc.Channel):
    """A channel over an :class:`EndpointOrder`: every call goes to the order's current
    endpoint (stubs made once keep working after a move), and a call that fails with
    UNAVAILABLE moves the order on. Calls are not retried here: an UNAVAILABLE call may
    have run, and its caller knows whether it may be repeated (the replication protocol
    resumes; see agent.replication.engine)."""

    def __init__(self, order: EndpointOrder, connect: Callable[[str], grpc.Channel]) -> None:
        self.order = order
        self._connect = connect
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def channel(self, endpoint: str) -> grpc.Channel:
        """The channel to ``endpoint``, made on first use and kept (gRPC reconnects it)."""
        with self._lock:
            ch = self._channels.get(endpoint)
            if ch is None:
                ch = self._channels[endpoint] = self._connect(endpoint)
            return ch

    def observe(self, endpoint: str, exc: grpc.RpcError, moves_on: frozenset[grpc.StatusCode] = MOVE_ON) -> None:
        """A call on ``endpoint`` failed: move on when its status is one of ``moves_on``."""
        code = exc.code() if hasattr(exc, "code") else None
        failures = self.order.failed(endpoint) if code in moves_on else 0
        if failures and len(self.order.endpoints) > 1:
            # once per outage at warning (leaving an endpoint that worked); the rounds of an
            # outage of every endpoint would repeat it every few seconds
            fields = {"target": endpoint, "next": self.order.current, "status": getattr(code, "name", str(code)),
                      "detail": exc.details() if hasattr(exc, "details") else str(exc)}
            log.log(logging.WARNING if failures == 1 else logging.DEBUG, "cloud endpoint not answering, moving on",
                    extra={"fields": fields})

    # the four kinds of multi-callable, bound at call time (_FailoverCallable)
    unary_unary = _multicallable("unary_unary", streaming_response=False)
    unary_stream = _multicallable("unary_stream", streaming_response=True)
    stream_unary = _multicallable("stream_unary", streaming_response=False)
    stream_stream = _multicallable("stream_stream", streaming_response=True)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self.channel(self.order.current).subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self.channel(self.order.current).unsubscribe(callback)

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            ch.close()

    def __enter__(self) -> FailoverChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _FailoverCallable:
    """A multi-callable bound at call time to the current endpoint's channel."""

    def __init__(self, owner: FailoverChannel, kind: str, method: str, serializer: Any, deserializer: Any,
                 streaming_response: bool) -> None:
        self.owner = owner
        self.kind = kind
        self.method = method
        self.serializer = serializer
        self.deserializer = deserializer
        self.streaming_response = streaming_response
        self._bound_to: dict[str, Any] = {}   # endpoint: the multi-callable on its channel

    def _bound(self) -> tuple[str, Any]:
        endpoint = self.owner.order.current
        fn = self._bound_to.get(endpoint)
        if fn is None:
            make = getattr(self.owner.channel(endpoint), self.kind)
            fn = self._bound_to[endpoint] = make(self.method, request_serializer=self.serializer,
                                                 response_deserializer=self.deserializer, _registered_method=True)
        return endpoint, fn

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        endpoint, fn = self._bound()
        try:
            result = fn(request, *args, **kwargs)
        except grpc.RpcError as exc:
            self.owner.observe(endpoint, exc)
            raise
        if self.streaming_response:
            return _Watched(result, self.owner, endpoint)
        self.owner.order.succeeded(endpoint)
        return result

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        endpoint, fn = self._bound()
        try:
            result = fn.with_call(request, *args, **kwargs)
        except grpc.RpcError as exc:
            self.owner.observe(endpoint, exc)
            raise
        self.owner.order.succeeded(endpoint)
        return result

    def future(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._bound()[1].future(request, *args, **kwargs)


class _Watched:
    """A streamed response: its failure (which surfaces while iterating) moves the order on
    too; everything else (cancel, code, ...) is the call's own."""

    def __init__(self, call: Any, owner: FailoverChannel, endpoint: str) -> None:
        self._call = call
        self._owner = owner
        self._endpoint = endpoint

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            self._owner.observe(self._endpoint, exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)
