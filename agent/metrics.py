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

from collections.abc import Iterable, Iterator

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


__all__ = ["CycleMetrics", "HostCollector"]
