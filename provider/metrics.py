"""The provider's figures as Prometheus metrics (served on ``metrics_listen``).

Counted as things happen (:class:`ProviderMetrics`)::

    asr_provider_commands_total{kind, outcome}    commands from the cloud: relayed (queued for
                                                  the agent), refused (answered here: unknown
                                                  kind, host not configured, no customer key) or
                                                  replayed (delivered again, answered from records)
    asr_provider_results_reported_total{result}   command results reported to the cloud (ok, failed)
    asr_provider_report_failures_total            reports the cloud did not take (retried)
    asr_provider_syncs_total                      inventory syncs the cloud accepted
    asr_provider_sync_failures_total{code}        inventory syncs refused or not delivered
    asr_provider_last_sync_timestamp_seconds      when the last sync was accepted
    asr_provider_synced_vms                       VMs in the last accepted sync

Read at scrape time (:class:`ProviderCollector`)::

    asr_provider_agents_connected                 configured hosts whose agent is connected
    asr_provider_agent_connected{host, cloud}     1 when that host's agent reported recently
    asr_provider_agent_last_seen_timestamp_seconds{host, cloud}
    asr_provider_agent_commands_queued{host}      commands waiting for that host's agent

Every series carries ``vault`` (the vault's name). The cloud link's state comes from
``registration.linkmetrics``; the HostLink server's gRPC metrics from ``asrops.metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from provider.config import ProviderConfig
from provider.store import ProviderStore


class ProviderMetrics:
    def __init__(self, registry: CollectorRegistry, vault: str) -> None:
        self.vault = vault
        self.commands = Counter("asr_provider_commands", "Commands received from the cloud service, by kind and "
                                "outcome (relayed, refused, replayed)", ["vault", "kind", "outcome"],
                                registry=registry)
        self.reported = Counter("asr_provider_results_reported", "Command results reported to the cloud service",
                                ["vault", "result"], registry=registry)
        self.report_failures = Counter("asr_provider_report_failures", "Reports of command results the cloud "
                                       "service did not take (they are retried)", ["vault"], registry=registry)
        self.syncs = Counter("asr_provider_syncs", "Inventory syncs the cloud service accepted", ["vault"],
                             registry=registry)
        self.sync_failures = Counter("asr_provider_sync_failures", "Inventory syncs refused or not delivered, by "
                                     "ASR error code", ["vault", "code"], registry=registry)
        self.last_sync = Gauge("asr_provider_last_sync_timestamp_seconds", "When the cloud service last accepted "
                               "an inventory sync", ["vault"], registry=registry)
        self.synced_vms = Gauge("asr_provider_synced_vms", "VMs in the last accepted inventory sync", ["vault"],
                                registry=registry)

    def command(self, kind: str, outcome: str) -> None:
        self.commands.labels(self.vault, kind, outcome).inc()

    def report(self, ok: bool | None) -> None:
        """A result was reported (``ok`` its outcome), or its report failed (None)."""
        if ok is None:
            self.report_failures.labels(self.vault).inc()
        else:
            self.reported.labels(self.vault, "ok" if ok else "failed").inc()

    def synced(self, at: float, vms: int) -> None:
        self.syncs.labels(self.vault).inc()
        self.last_sync.labels(self.vault).set(at)
        self.synced_vms.labels(self.vault).set(vms)

    def sync_failed(self, code: str) -> None:
        self.sync_failures.labels(self.vault, code).inc()


class ProviderCollector(Collector):
    def __init__(self, cfg: ProviderConfig, store: ProviderStore, vault: str,
                 last_seen: Callable[[str], float], connected: Callable[[str], bool]) -> None:
        self.cfg = cfg
        self.store = store
        self.vault = vault
        self.last_seen = last_seen
        self.connected = connected

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        total = GaugeMetricFamily("asr_provider_agents_connected", "Configured hosts whose agent is connected",
                                  labels=["vault"])
        each = GaugeMetricFamily("asr_provider_agent_connected", "1 when the host's agent reported recently (within "
                                 "3 heartbeats, at least 10 s)", labels=["vault", "host", "cloud"])
        seen = GaugeMetricFamily("asr_provider_agent_last_seen_timestamp_seconds", "When the host's agent last "
                                 "reported (0: not since the provider started)", labels=["vault", "host", "cloud"])
        queued = GaugeMetricFamily("asr_provider_agent_commands_queued", "Commands waiting for the host's agent",
                                   labels=["vault", "host"])
        n = 0
        for cloud in self.cfg.clouds:
            for host in cloud.hosts:
                up = self.connected(host)
                n += up
                each.add_metric([self.vault, host, cloud.name], 1.0 if up else 0.0)
                seen.add_metric([self.vault, host, cloud.name], self.last_seen(host))
                queued.add_metric([self.vault, host], len(self.store.agent_queue(host)))
        total.add_metric([self.vault], n)
        yield from (total, each, seen, queued)


__all__ = ["ProviderCollector", "ProviderMetrics"]
