"""Prometheus metrics shared by the daemons.

Each daemon serves them on its own ``metrics_listen`` address (off when empty). Names
follow Prometheus conventions: ``asr_`` prefix, base units, ``_total`` for counters.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPCS = Counter("asr_rpc_total", "RPCs served, by method and result code", ["method", "code"])
RPC_SECONDS = Histogram("asr_rpc_seconds", "Time to serve a unary RPC", ["method"],
                        buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0, 60.0))


def serve(listen: str) -> None:
    """Start the /metrics HTTP endpoint on HOST:PORT (a daemon thread)."""
    if not listen:
        return
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")
