"""A registered server's link to the cloud: the mTLS channel and the heartbeat loop.

The link reports its state in STATE_DIR/status.json and in the log: "Connected" after a
heartbeat succeeded, "Unreachable" (with the error) when it failed, and it keeps trying at
the heartbeat interval, so a proxy or cloud outage heals by itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

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


class CloudLink:
    def __init__(self, ident: SiteIdentity, clock: Clock, proxy: ProxyUrl | None) -> None:
        self.ident = ident
        self.clock = clock
        self.proxy = proxy
        ca, cert, key = ident.pems()
        self.target = ident.endpoints["api"]
        self.channel = client_channel(self.target, ca, cert, key, proxy)
        # replication's chunk uploads, on a connection of their own (see client_channel)
        self.bulk_channel = client_channel(self.target, ca, cert, key, proxy, own_connection=True)
        self.site = site_pb2_grpc.SiteStub(self.channel)
        self.state = "Unknown"
        self.last_ok = 0.0
        self.last_error = ""
        self._lock = threading.Lock()

    def call(self, fn: object, request: object, timeout: float = 30.0) -> object:
        try:
            return fn(request, timeout=timeout)  # type: ignore[operator]
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"the cloud service at {self.target}") from exc

    def heartbeat(self) -> bool:
        try:
            self.call(self.site.Heartbeat, site_pb2.HeartbeatRequest(version=VERSION), timeout=HEARTBEAT_TIMEOUT_S)
        except AsrError as err:
            self._set("Refused" if isinstance(err, AuthError) else "Unreachable", err)
            return False
        self._set("Connected", None)
        return True

    def _set(self, state: str, err: AsrError | None) -> None:
        with self._lock:
            changed = state != self.state
            self.state = state
            if err is None:
                self.last_ok = self.clock.now()
                self.last_error = ""
            else:
                self.last_error = f"{err.code}: {err}"
            if changed:
                if err is None:
                    log.info("cloud reachable", extra={"fields": {"target": self.target}})
                else:
                    log.warning("cloud %s", state.lower(), extra={"fields": {
                        "target": self.target, "error": self.last_error,
                        "proxy": self.proxy.redacted if self.proxy else ""}})
            write_status(self.ident.state_dir, {
                "cloud": {"state": self.state, "target": self.target, "last_ok": self.last_ok,
                          "last_error": self.last_error,
                          "proxy": self.proxy.redacted if self.proxy else ""},
            })

    def run_heartbeats(self, interval: float, stopping: threading.Event,
                       beat: Callable[[], None] = lambda: None) -> None:
        """Heartbeat every ``interval`` until ``stopping``; ``beat`` on every turn (the daemon
        core's watchdog, see ``asrops.lifecycle``: a turn takes at most ``interval`` plus
        :data:`HEARTBEAT_TIMEOUT_S`)."""
        while True:
            beat()
            self.heartbeat()
            if stopping.wait(interval):
                return

    def close(self) -> None:
        self.channel.close()
        self.bulk_channel.close()
