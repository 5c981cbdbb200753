"""The running agent's composition root: the local hypervisor's host, assembled here and
nowhere else (command handlers, links, the replication engine), with every thread started
and stopped here.

Start-up order: recover the hypervisor's state (a snapshot left by a killed process is
merged back into the dirty sets), then the cloud link (heartbeats), the provider link
(inventory, commands), the replication engine (which checks every VM's epoch first), and
the metrics endpoint when ``metrics_listen`` names one (``agent.metrics``). When
``replica_listen`` is set the host also holds replicas for primaries of other sites
(``agent.replica``): its stores are recovered (unrecorded points dropped, an interrupted
apply redone) before the replica server starts, and the ReportReplica thread and the applier
thread (replica disks brought to each new point after CommitPoint answered) run beside it.
"""

from __future__ import annotations

import logging
import threading

from agent import failback, replication, testcommands
from agent.commands import register_builtin
from agent.config import load
from agent.hostlink import ProviderLink
from agent.hypervisor import LocalHypervisor
from agent.metrics import CycleMetrics, HostCollector, ReverseCollector
from agent.replica.applier import Applier
from agent.replica.channel import check_can_serve, vault_ca_pem
from agent.replica.failover import ReplicaFailovers
from agent.replica.replica_api import build_server
from agent.replica.reporter import Reporter
from agent.replica.role import Replicas
from agent.replica.service import ReplicaService
from agent.replica.store import ReplicaHost
from agent.replica.sync import SyncSource
from agent.reverse import ReverseReplication
from agent.runtime import AgentRuntime
from agent.settings import Settings
from asrclock import from_environment
from asrops import allocator, environment
from asrops.lifecycle import Lifecycle
from asrops.logs import setup
from asrops.metrics import Metrics
from registration.link import CloudLink, heartbeat_stuck_after
from registration.linkmetrics import CloudLinkCollector
from registration.state import load as load_identity

log = logging.getLogger("asr-agent")

INVENTORY_STUCK_AFTER_S = 180.0  # a turn: one report (30 s timeout) and a 0.5 s pause


def run(config_path: str, life: Lifecycle | None = None) -> int:
    """The agent's daemon core (see ``asrops.lifecycle``): a terminal or systemd passes no
    ``life`` (signals stop it); the Windows service host passes its own."""
    setup("asr-agent")
    environment.check("asr-agent")   # test hooks and bad tuning values refuse to start
    allocator.tune()
    cfg = load(config_path)
    ident = load_identity(cfg.state_dir)
    clock = from_environment()
    life = life or Lifecycle.for_console()
    hv = LocalHypervisor(cfg.vm_dir, clock)
    recovered = hv.recover()
    if recovered:
        log.info("recovered stale snapshots", extra={"fields": {"vms": recovered}})
    link = CloudLink(ident, clock, cfg.proxy)
    settings = Settings(cfg.state_dir)
    metrics = Metrics()
    metrics.register(HostCollector(hv, settings, ident.vault_name))
    metrics.register(CloudLinkCollector(link, ident.vault_name))
    metrics.serve(cfg.metrics_listen, cfg.path)
    rt = AgentRuntime(config=cfg, ident=ident, clock=clock, hv=hv, link=link, settings=settings,
                      stopping=life.stopping, cycle_metrics=CycleMetrics(metrics.registry, ident.vault_name))
    register_builtin(rt)
    failback.register(rt)
    rt.reverse = ReverseReplication(rt)
    rt.handlers["reverse_replicate"] = rt.reverse.command
    metrics.register(ReverseCollector(rt.reverse.all, ident.vault_name))
    replicas = _replicas(rt, life)
    hb = threading.Thread(target=link.run_heartbeats, name="heartbeat", daemon=True,
                          args=(cfg.heartbeat_seconds, life.stopping,
                                life.watch("heartbeat", heartbeat_stuck_after(cfg.heartbeat_seconds))))
    hb.start()
    provider = ProviderLink(rt)
    # the inventory report reads every VM's definition (under its lock): a turn that never
    # ends is a wedged hypervisor
    threads = provider.start(life.watch("inventory", INVENTORY_STUCK_AFTER_S))
    if replicas is not None:
        t = threading.Thread(target=replicas.reporter.run, name="replica-reports", daemon=True,
                             args=(replicas.release,))
        t.start()
        threads.append(t)
        t = threading.Thread(target=replicas.applier.run, name="replica-apply", daemon=True)
        t.start()
        threads.append(t)
    t = threading.Thread(target=rt.reverse.run, name="reverse-sync", daemon=True)
    t.start()
    threads.append(t)
    command_dir = environment.test_hook("ASR_TEST_COMMAND_DIR")
    if command_dir:
        t = threading.Thread(target=testcommands.run, name="test-commands", daemon=True,
                             args=(command_dir, provider.apply, life.stopping))
        t.start()
        threads.append(t)
    replication.start(rt)
    log.info("agent running", extra={"fields": {"identity": ident.identity, "provider": ident.provider_address}})
    life.ready(f"agent {ident.name}")
    life.serve()
    life.stop()
    if replicas is not None:
        replicas.reporter.stop()
        replicas.server.stop(grace=2).wait()
        replicas.applier.stop()   # an apply in progress ends first; close() below waits for it
    if rt.replication is not None:
        rt.replication.stop()
    provider.stop()
    for t in [hb, *threads]:
        t.join(timeout=5)
    if replicas is not None:
        replicas.host.close()
    metrics.close()
    link.close()
    hv.close()
    log.info("stopped")
    return 0


def _replicas(rt: AgentRuntime, life: Lifecycle) -> Replicas | None:
    """The recovery host's role (site-to-site), when ``replica_listen`` is set: the replicas
    recovered, then served."""
    cfg = rt.config
    if not cfg.replica_listen:
        return None
    check_can_serve(rt.ident)
    host = ReplicaHost(cfg.replica_path, rt.clock)
    host.recover()
    reporter = Reporter(host, rt.link.channel, rt.clock, life.stopping)
    applier = Applier(host, life.stopping, on_applied=reporter.point_made)
    service = ReplicaService(host, rt.ident.vault_id, applier, on_point=reporter.point_made)
    failovers = ReplicaFailovers(host, applier, rt.hv)
    _, chain, key = rt.ident.pems()
    server, port = build_server(service, failovers, SyncSource(failovers, rt.hv), cfg.replica_listen, chain, key,
                                vault_ca_pem(rt.ident))
    server.start()
    log.info("serving replicas", extra={"fields": {"listen": cfg.replica_listen, "port": port,
                                                   "dir": cfg.replica_path, "replicas": len(host.pairings.all())}})
    rt.replica = Replicas(host, service, server, port, reporter, applier, failovers)
    return rt.replica
