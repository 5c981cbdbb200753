"""A registered server's link to the cloud: the mTLS channel and the heartbeat loop.

The link reports its state in STATE_DIR/status.json and in the log: "Connected" after a
heartbeat succeeded, "Unreachable" (with the error) when it failed, and it keeps trying at
the heartbeat interval, so a proxy or cloud outage heals by itself.

With several cloud endpoints (the registration's ``endpoints.api``) every call goes to the
current one of an :class:`~asrchannel.endpoints.EndpointOrder`: a heartbeat that fails at
the transport level (UNAVAILABLE, or its deadline) moves the link to the next endpoint and
tries it at once; after a whole round failed the next turn waits the order's backoff (at
most the heartbeat interval). Other calls that fail with UNAVAILABLE move it too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import grpc

from asrchannel.endpoints import EndpointOrder, FailoverChannel, check_endpoints
from asrchannel.proxy import ProxyUrl
from asrchannel.status import from_rpc_error
from asrchannel.tls import client_channel
from asrclock import Clock
from asrerrors import AsrError, AuthError
from asrpb import site_pb2, site_pb2_grpc
from registration.enrol import VERSION
from registration.state import SiteIdentity, write_status

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT_S = 10.0


def heartbeat_stuck_after(interval: float) -> float:
    """How long the heartbeat loop may go without a turn before it counts as stuck: two
    turns (each the interval plus a timed-out call) and a minute for a slow status write."""
    return 2 * (interval + HEARTBEAT_TIMEOUT_S) + 60.0


# a heartbeat that failed this way moves the link to the next endpoint; a slow answer
# (deadline) counts here, unlike for other calls, since a heartbeat does nothing
_HEARTBEAT_MOVES_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class CloudLink:
    def __init__(self, ident: SiteIdentity, clock: Clock, proxy: ProxyUrl | None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ident = ident
        self.clock = clock
        self.proxy = proxy
        ca, cert, key = ident.pems()
        self.endpoints = list(ident.endpoints["api"])
        self.order = EndpointOrder(self.endpoints, monotonic)
        self.channel = FailoverChannel(self.order, lambda t: client_channel(t, ca, cert, key, proxy))
        # replication's chunk uploads, on a connection of their own (see client_channel)
        self.bulk_channel = FailoverChannel(
            self.order, lambda t: client_channel(t, ca, cert, key, proxy, own_connection=True))
        self.site = site_pb2_grpc.SiteStub(self.channel)
        self.moves = 0              # times the link moved to another endpoint (metrics)
        self._transport_failed = False   # the last heartbeat failed to reach a service
        self._last_target = ""
        self.state = "Unknown"
        self.last_ok = 0.0
        self.last_error = ""
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        """The endpoint calls go to now."""
        return self.order.current

    def call(self, fn: object, request: object, timeout: float = 30.0) -> object:
        target = self.target
        try:
            return fn(request, timeout=timeout)  # type: ignore[operator]
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"the cloud service at {target}") from exc

    def heartbeat(self) -> bool:
        # on one named endpoint, so that its failure is held against that one
        target = self.order.current
        stub = site_pb2_grpc.SiteStub(self.channel.channel(target))
        try:
            resp = stub.Heartbeat(site_pb2.HeartbeatRequest(version=VERSION), timeout=HEARTBEAT_TIMEOUT_S)
        except grpc.RpcError as exc:
            err = from_rpc_error(exc, f"the cloud service at {target}")
            self.channel.observe(target, exc, _HEARTBEAT_MOVES_ON)
            self._transport_failed = exc.code() in _HEARTBEAT_MOVES_ON
            self._set("Refused" if isinstance(err, AuthError) else "Unreachable", err, target)
            return False
        self.order.succeeded(target)
        self._adopt_endpoints(list(resp.api_endpoints), list(resp.registration_endpoints))
        self._set("Connected", None, target)
        return True

    def _adopt_endpoints(self, api: list[str], registration: list[str]) -> None:
        """The cloud's configured endpoints, when they differ from the registration's: recorded
        in registration.json (so a restart uses them too) and followed from the next call. An
        empty list (a cloud without ``endpoints``) or a malformed one changes nothing."""
        new = dict(self.ident.endpoints)
        for role, announced in (("api", api), ("registration", registration)):
            if not announced:
                continue
            try:
                new[role] = check_endpoints(announced, f"the cloud's announced {role} endpoints", "")
            except AsrError as exc:
                log.warning("ignoring the cloud's endpoint list: %s", exc)
                return
        if new == self.ident.endpoints:
            return
        old = self.ident.endpoints
        self.ident.endpoints = new
        try:
            self.ident.save_record()
        except (OSError, AsrError) as exc:   # a full disk: follow the new list now, record it later
            self.ident.endpoints = old
            log.warning("cannot record the cloud's new endpoints in registration.json: %s", exc)
        self.order.replace(new["api"])
        with self._lock:
            self.endpoints = list(new["api"])
        log.info("cloud endpoints changed", extra={"fields": {"from": old, "to": new}})

    def _set(self, state: str, err: AsrError | None, target: str) -> None:
        with self._lock:
            changed = state != self.state or (err is None and target != self._last_target)
            if err is None and self._last_target and target != self._last_target:
                self.moves += 1
            if err is None:
                self._last_target = target
            self.state = state
            if err is None:
                self.last_ok = self.clock.now()
                self.last_error = ""
            else:
                self.last_error = f"{err.code}: {err}"
            if changed:
                if err is None:
                    log.info("cloud reachable", extra={"fields": {"target": target}})
                else:
                    log.warning("cloud %s", state.lower(), extra={"fields": {
                        "target": target, "error": self.last_error,
                        "proxy": self.proxy.redacted if self.proxy else ""}})
            write_status(self.ident.state_dir, {
                "cloud": {"state": self.state, "target": target, "endpoints": self.endpoints,
                          "last_ok": self.last_ok, "last_error": self.last_error,
                          "proxy": self.proxy.redacted if self.proxy else ""},
            })

    def run_heartbeats(self, interval: float, stopping: threading.Event,
                       beat: Callable[[], None] = lambda: None) -> None:
        """Heartbeat every ``interval`` until ``stopping``; ``beat`` on every turn (the daemon
        core's watchdog, see ``asrops.lifecycle``: a turn takes at most ``interval`` plus
        :data:`HEARTBEAT_TIMEOUT_S`)."""
        while True:
            beat()
            ok = self.heartbeat()
            # after a transport failure: the next endpoint at once while a round is not over,
            # then the order's backoff (never slower than the interval). An answer that
            # refused (a removed server) waits the interval: nothing moved, asking again at
            # once would only hammer the service
            delay = interval if ok or not self._transport_failed else min(interval, self.order.wait())
            if stopping.wait(delay):
                return

    def close(self) -> None:
        self.channel.close()
        self.bulk_channel.close()
