"""The agent's figures as Prometheus metrics (served on ``metrics_listen``, off by default:
the agent otherwise listens on nothing).

Counted as cycles end (:class:`CycleMetrics`, called by the replication engine)::

    asr_agent_cycles_total{vault, vm}                 cycles whose point the vault acknowledged
    asr_agent_sent_bytes_total{vault, vm}             chunk frame bytes sent by those cycles
    asr_agent_resyncs_total{vault, vm}                those that re-synchronised a disk
    asr_agent_cycle_failures_total{vault, vm, code}   cycles that failed, by ASR error code
                                                      (ASR-0044: the vault refused a stale host)
    asr_agent_last_cycle_seconds{vault, vm}           duration of the VM's last acknowledged cycle
    asr_agent_cycle_seconds{vault}                    histogram of acknowledged cycles' durations

Read at scrape time (:class:`HostCollector`)::

    asr_agent_vm_fenced{vault, vm}                    1 for a VM whose copy here is fenced (stale)
    asr_agent_fenced_vms{vault}                       how many
    asr_agent_vms_replicating{vault}                  VMs enabled for replication and not fenced

The cloud link's state comes from ``registration.linkmetrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.hypervisor import LocalHypervisor
from agent.replication.cycle import CycleResult
from agent.settings import Settings

# seconds: an incremental cycle of a quiet VM to the initial copy of a large one
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


class CycleMetrics:
    def __init__(self, registry: CollectorRegistry, vault: str) -> None:
        self.vault = vault
        vm = ["vault", "vm"]
        self.cycles = Counter("asr_agent_cycles", "Replication cycles whose point the vault acknowledged", vm,
                              registry=registry)
        self.sent = Counter("asr_agent_sent_bytes", "Chunk frame bytes sent by acknowledged cycles (compressed, "
                            "encrypted when the policy says so)", vm, registry=registry)
        self.resyncs = Counter("asr_agent_resyncs", "Acknowledged cycles that re-synchronised a disk (tracking "
                               "lost, disk resized, or the vault's latest point not the one this host knew)", vm,
                               registry=registry)
        self.failures = Counter("asr_agent_cycle_failures", "Replication cycles that failed, by ASR error code",
                                [*vm, "code"], registry=registry)
        self.last_seconds = Gauge("asr_agent_last_cycle_seconds", "Duration of the VM's last acknowledged cycle", vm,
                                  registry=registry)
        self.seconds = Histogram("asr_agent_cycle_seconds", "Durations of acknowledged replication cycles",
                                 ["vault"], buckets=CYCLE_BUCKETS, registry=registry)

    def committed(self, vm: str, res: CycleResult) -> None:
        self.cycles.labels(self.vault, vm).inc()
        self.sent.labels(self.vault, vm).inc(res.bytes_sent)
        if "resync" in res.modes:
            self.resyncs.labels(self.vault, vm).inc()
        self.last_seconds.labels(self.vault, vm).set(res.seconds)
        self.seconds.labels(self.vault).observe(res.seconds)

    def failed(self, vm: str, code: str) -> None:
        self.failures.labels(self.vault, vm, code).inc()


class HostCollector(Collector):
    def __init__(self, hv: LocalHypervisor, settings: Settings, vault: str) -> None:
        self.hv = hv
        self.settings = settings
        self.vault = vault

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        each = GaugeMetricFamily("asr_agent_vm_fenced", "1 for a VM whose copy on this host is fenced: it failed "
                                 "over and may neither replicate nor start until failback", labels=["vault", "vm"])
        fenced = set()
        for vm in self.hv.list():
            is_fenced = self.hv.fenced(vm.name) is not None
            if is_fenced:
                fenced.add(vm.name)
            each.add_metric([self.vault, vm.name], 1.0 if is_fenced else 0.0)
        count = GaugeMetricFamily("asr_agent_fenced_vms", "VMs fenced on this host", labels=["vault"])
        count.add_metric([self.vault], len(fenced))
        replicating = GaugeMetricFamily("asr_agent_vms_replicating", "VMs enabled for replication on this host and "
                                        "not fenced", labels=["vault"])
        replicating.add_metric([self.vault], sum(1 for rs in self.settings.all() if rs.vm_name not in fenced))
        yield from (each, count, replicating)


class ReverseCollector(Collector):
    """Re-protect (``agent.reverse``): per VM this host follows, when it last synced, how many
    blocks that sync fetched, and whether it failed (its entry's ``last_error``)."""

    def __init__(self, entries: Callable[[], list[Any]], vault: str) -> None:
        self.entries = entries
        self.vault = vault

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["vault", "vm", "recovery_host"]
        at = GaugeMetricFamily("asr_agent_reverse_last_sync_timestamp_seconds", "Re-protect: when this host last "
                               "synced its copy of a failed-over VM from the recovery host", labels=labels)
        blocks = GaugeMetricFamily("asr_agent_reverse_last_sync_blocks", "Re-protect: blocks the last sync fetched",
                                   labels=labels)
        failing = GaugeMetricFamily("asr_agent_reverse_sync_failing", "Re-protect: 1 when the last sync failed "
                                    "(its error is in the agent's log and STATE_DIR/reverse/)", labels=labels)
        for e in self.entries():
            key = [self.vault, e.vm_name, e.recovery_host]
            at.add_metric(key, e.last_sync_at)
            blocks.add_metric(key, e.last_blocks)
            failing.add_metric(key, 1.0 if e.last_error else 0.0)
        yield from (at, blocks, failing)


__all__ = ["CycleMetrics", "HostCollector", "ReverseCollector"]
