"""The running agent's composition root: the local hypervisor's host, assembled here and
nowhere else (command handlers, links, the replication engine), with every thread started
and stopped here.

Start-up order: recover the hypervisor's state (a snapshot left by a killed process is
merged back into the dirty sets), then the cloud link (heartbeats), the provider link
(inventory, commands), and the replication engine (which checks every VM's epoch first).
"""

from __future__ import annotations

import logging
import threading

from agent import failback, replication
from agent.commands import register_builtin
from agent.config import load
from agent.hostlink import ProviderLink
from agent.hypervisor import LocalHypervisor
from agent.runtime import AgentRuntime
from agent.settings import Settings
from asrclock import from_environment
from asrops import allocator, environment
from asrops.lifecycle import Lifecycle
from asrops.logs import setup
from registration.link import CloudLink
from registration.state import load as load_identity

log = logging.getLogger("asr-agent")


def run(config_path: str) -> int:
    setup("asr-agent")
    environment.check("asr-agent")   # test hooks and bad tuning values refuse to start
    allocator.tune()
    cfg = load(config_path)
    ident = load_identity(cfg.state_dir)
    clock = from_environment()
    life = Lifecycle()
    life.install_signal_handlers()
    hv = LocalHypervisor(cfg.vm_dir, clock)
    recovered = hv.recover()
    if recovered:
        log.info("recovered stale snapshots", extra={"fields": {"vms": recovered}})
    link = CloudLink(ident, clock, cfg.proxy)
    rt = AgentRuntime(config=cfg, ident=ident, clock=clock, hv=hv, link=link, settings=Settings(cfg.state_dir),
                      stopping=life.stopping)
    register_builtin(rt)
    failback.register(rt)
    hb = threading.Thread(target=link.run_heartbeats, args=(cfg.heartbeat_seconds, life.stopping),
                          name="heartbeat", daemon=True)
    hb.start()
    provider = ProviderLink(rt)
    threads = provider.start()
    replication.start(rt)
    log.info("agent running", extra={"fields": {"identity": ident.identity, "provider": ident.provider_address}})
    life.ready(f"agent {ident.name}")
    life.wait()
    life.stop()
    if rt.replication is not None:
        rt.replication.stop()
    provider.stop()
    for t in [hb, *threads]:
        t.join(timeout=5)
    link.close()
    hv.close()
    log.info("stopped")
    return 0
