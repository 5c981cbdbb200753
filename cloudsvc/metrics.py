"""The vault's figures as Prometheus metrics, read from the owners of the state at scrape time.

Nothing here is updated as things happen: RPO and health change with the clock alone, and a
figure read from the metadata DB at scrape time is the same whichever cloud-service process
is asked (query one of them, or take ``max by`` across them). The composition root registers
a :class:`VaultCollector` on its registry (``asrops.metrics.Metrics``). Labels: ``vault``
(name), ``vm`` (name) and ``vm_id`` (names may repeat across hosts; ids do not).

=================================================  =========  ======================================
name                                               type       what
=================================================  =========  ======================================
asr_vm_info{vault,vm,vm_id,cloud,state,side}      gauge      1 per protected VM: protection state, active side
asr_vm_health{vault,vm,vm_id,state}               gauge      state set: 1 for the current of Normal, Warning, Critical
asr_vm_rpo_seconds{vault,vm,vm_id}                gauge      age of the latest point (only while the primary replicates)
asr_vm_last_point_timestamp_seconds               gauge      creation time of the latest point
asr_vm_initial_replication_ratio                  gauge      0..1 progress of the first copy (1 once a point exists)
asr_vm_recovery_points                            gauge      committed points kept
asr_vm_shipped_bytes_total                        counter    bytes the agent sent in committed cycles
asr_vm_cycles_total                               counter    committed cycles
asr_vm_resyncs_total                              counter    committed cycles that re-synchronised a disk
asr_vm_last_cycle_seconds                         gauge      the last committed cycle, BeginCycle to commit
asr_jobs{vault,kind,state}                        gauge      jobs recorded, by kind and state (outcome)
asr_storage_bytes{vault,storage}                  gauge      bytes of packs in a storage account
asr_storage_upload_sessions{vault,storage}        gauge      open upload sessions (cycles; left by dead agents)
asr_storage_oldest_session_timestamp_seconds      gauge      when the oldest open upload session began
asr_commands_pending{vault,provider}              gauge      commands not yet completed by the site
asr_commands_oldest_pending_timestamp_seconds     gauge      creation time of the oldest pending command
asr_server_connected{vault,role,server}           gauge      1 when the last heartbeat is recent enough
asr_server_last_heartbeat_timestamp_seconds       gauge      time of a server's last heartbeat
asr_vault_key_expiry_timestamp_seconds{vault}     gauge      when the active registration key expires
=================================================  =========  ======================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from asrclock import Clock
from cloudsvc.commands import Commands
from cloudsvc.jobs import Jobs
from cloudsvc.registrar import Registrar
from cloudsvc.replication import Replication
from cloudsvc.vaults import VaultRow, Vaults

HEALTH_STATES = ("Normal", "Warning", "Critical")
VM = ["vault", "vm", "vm_id"]


class VaultCollector(Collector):
    def __init__(self, vaults: Vaults, replication: Replication, jobs: Jobs, commands: Commands,
                 registrar: Registrar, clock: Clock, heartbeat_timeout: float) -> None:
        self.vaults = vaults
        self.replication = replication
        self.jobs = jobs
        self.commands = commands
        self.registrar = registrar
        self.clock = clock
        self.heartbeat_timeout = heartbeat_timeout

    def describe(self) -> Iterable[Metric]:
        # No fixed description: the registry must not run a scrape's queries when it is registered.
        return []

    def collect(self) -> Iterator[Metric]:
        vaults = self.vaults.list_vaults()
        names = {v.id: v.name for v in vaults}
        yield from self._vms(names)
        yield from self._vaults(vaults, names)

    def _vms(self, names: dict[str, str]) -> Iterator[Metric]:
        info = GaugeMetricFamily("asr_vm_info", "A protected VM: its protection state and active side (value 1)",
                                 labels=[*VM, "cloud", "state", "side"])
        health = GaugeMetricFamily("asr_vm_health", "Replication health of a protected VM, as a state set: 1 for "
                                   "its current state (Normal, Warning, Critical), 0 for the others",
                                   labels=[*VM, "state"])
        rpo = GaugeMetricFamily("asr_vm_rpo_seconds", "Age of the VM's latest recovery point (recovery point "
                                "objective achieved); absent before the first point and while failed over",
                                labels=VM)
        last = GaugeMetricFamily("asr_vm_last_point_timestamp_seconds", "Creation time of the VM's latest recovery "
                                 "point, seconds since 1970", labels=VM)
        initial = GaugeMetricFamily("asr_vm_initial_replication_ratio", "Progress of the VM's initial copy, 0 to 1 "
                                    "(1 once a recovery point exists)", labels=VM)
        points = GaugeMetricFamily("asr_vm_recovery_points", "Committed recovery points the vault keeps for the VM",
                                   labels=VM)
        shipped = CounterMetricFamily("asr_vm_shipped_bytes", "Bytes the agent sent in the VM's committed "
                                      "replication cycles (compressed, and encrypted when the policy says so)",
                                      labels=VM)
        cycles = CounterMetricFamily("asr_vm_cycles", "Committed replication cycles of the VM", labels=VM)
        resyncs = CounterMetricFamily("asr_vm_resyncs", "Committed cycles that re-synchronised a disk of the VM "
                                      "(tracking was lost, or the disk was resized)", labels=VM)
        seconds = GaugeMetricFamily("asr_vm_last_cycle_seconds", "Duration of the VM's last committed cycle, from "
                                    "BeginCycle to the recorded point", labels=VM)
        for f in self.replication.figures():
            item = f.item
            labels = [names.get(item.vault_id, item.vault_id), item.name, item.vm_id]
            info.add_metric([*labels, item.cloud, item.state.value, item.location.value], 1)
            for state in HEALTH_STATES:
                health.add_metric([*labels, state], 1.0 if f.health.state == state else 0.0)
            if f.rpo is not None:
                rpo.add_metric(labels, f.rpo)
            points.add_metric(labels, f.points)
            row = f.status
            if row is None:
                initial.add_metric(labels, 0.0)
                for counter in (shipped, cycles, resyncs):
                    counter.add_metric(labels, 0)
                continue
            if row["last_point_at"]:
                last.add_metric(labels, float(row["last_point_at"]))
            initial.add_metric(labels, 1.0 if row["last_point_at"] else float(row["initial_progress"]))
            shipped.add_metric(labels, int(row["shipped_bytes"]))
            cycles.add_metric(labels, int(row["cycles"]))
            resyncs.add_metric(labels, int(row["resyncs"]))
            if row["cycles"]:
                seconds.add_metric(labels, float(row["last_cycle_seconds"]))
        yield from (info, health, rpo, last, initial, points, shipped, cycles, resyncs, seconds)

    def _vaults(self, vaults: list[VaultRow], names: dict[str, str]) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("asr_jobs", "Jobs the vault records, by kind and state (Succeeded, Failed and "
                                 "Cancelled are outcomes)", labels=["vault", "kind", "state"])
        for r in self.jobs.counts():
            jobs.add_metric([names.get(r["vault_id"], r["vault_id"]), r["kind"], r["state"]], int(r["n"]))
        yield jobs
        size = GaugeMetricFamily("asr_storage_bytes", "Bytes stored in a storage account (pack objects)",
                                 labels=["vault", "storage"])
        sessions = GaugeMetricFamily("asr_storage_upload_sessions", "Upload sessions open in a storage account: "
                                     "replication cycles in progress, or left by an agent that died (closed after "
                                     "an hour idle). While one is open, garbage collection leaves the packs "
                                     "written after it began", labels=["vault", "storage"])
        oldest_session = GaugeMetricFamily("asr_storage_oldest_session_timestamp_seconds", "When the oldest "
                                           "open upload session of a storage account began (absent when none)",
                                           labels=["vault", "storage"])
        for vault_id, storage, figures in self.replication.storage_figures():
            labels = [names.get(vault_id, vault_id), storage]
            size.add_metric(labels, figures.pack_bytes)
            sessions.add_metric(labels, figures.open_sessions)
            if figures.oldest_session_opened_at is not None:
                oldest_session.add_metric(labels, figures.oldest_session_opened_at)
        yield from (size, sessions, oldest_session)
        pending = GaugeMetricFamily("asr_commands_pending", "Commands to a site not completed yet",
                                    labels=["vault", "provider"])
        oldest = GaugeMetricFamily("asr_commands_oldest_pending_timestamp_seconds", "Creation time of the oldest "
                                   "pending command of a provider", labels=["vault", "provider"])
        for r in self.commands.pending_counts():
            labels = [names.get(r["vault_id"], r["vault_id"]), r["provider"]]
            pending.add_metric(labels, int(r["n"]))
            oldest.add_metric(labels, float(r["oldest"]))
        yield from (pending, oldest)
        connected = GaugeMetricFamily("asr_server_connected", "1 when a registered provider or agent sent a heartbeat "
                                      "within heartbeat_timeout_seconds, else 0", labels=["vault", "role", "server"])
        heartbeat = GaugeMetricFamily("asr_server_last_heartbeat_timestamp_seconds", "Time of a server's last "
                                      "heartbeat (0: never)", labels=["vault", "role", "server"])
        expiry = GaugeMetricFamily("asr_vault_key_expiry_timestamp_seconds", "When the vault's active registration "
                                   "key expires (0: no active key)", labels=["vault"])
        now = self.clock.now()
        for v in vaults:
            expiry.add_metric([v.name], float(v.key_expires_at))
            for r in self.registrar.list_servers(v.id):
                labels = [v.name, r["role"], r["name"]]
                beat = float(r["last_heartbeat"])
                connected.add_metric(labels, 1.0 if beat and now - beat <= self.heartbeat_timeout else 0.0)
                heartbeat.add_metric(labels, beat)
        yield from (connected, heartbeat, expiry)


__all__ = ["HEALTH_STATES", "VaultCollector"]
