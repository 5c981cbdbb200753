"""The cloud link of a provider or an agent as Prometheus metrics, read at scrape time::

    asr_cloud_link_state{state}                  state set: 1 for the link's state (Connected,
                                                 Unreachable, Refused, Unknown before the first try)
    asr_cloud_link_last_ok_timestamp_seconds     the last heartbeat the cloud answered (0: never)
    asr_cloud_link_endpoint{endpoint}            1 for the cloud endpoint calls go to now, 0 for
                                                 the registration's other endpoints
    asr_cloud_link_endpoint_moves_total          times the link came back on another endpoint
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registration.link import CloudLink

LINK_STATES = ("Connected", "Unreachable", "Refused", "Unknown")


class CloudLinkCollector(Collector):
    def __init__(self, link: CloudLink, vault: str) -> None:
        self.link = link
        self.vault = vault

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("asr_cloud_link_state", "State of this server's link to the cloud service, as a "
                                  "state set (1 for the current state)", labels=["vault", "state"])
        for s in LINK_STATES:
            state.add_metric([self.vault, s], 1.0 if self.link.state == s else 0.0)
        yield state
        last = GaugeMetricFamily("asr_cloud_link_last_ok_timestamp_seconds", "When the cloud service last answered "
                                 "a heartbeat (0: never since start)", labels=["vault"])
        last.add_metric([self.vault], float(self.link.last_ok))
        yield last
        current = self.link.target
        endpoint = GaugeMetricFamily("asr_cloud_link_endpoint", "The cloud endpoint this server's calls go to (1) "
                                     "among those it was registered with (0)", labels=["vault", "endpoint"])
        for e in self.link.endpoints:
            endpoint.add_metric([self.vault, e], 1.0 if e == current else 0.0)
        yield endpoint
        moves = CounterMetricFamily("asr_cloud_link_endpoint_moves", "Times this server's link came back on another "
                                    "cloud endpoint than the one it used before", labels=["vault"])
        moves.add_metric([self.vault], float(self.link.moves))
        yield moves


__all__ = ["LINK_STATES", "CloudLinkCollector"]
