"""The running agent: heartbeats to the cloud."""

from __future__ import annotations

import threading

from agent.config import load
from asrclock import from_environment
from asrops.lifecycle import Lifecycle
from asrops.logs import setup
from registration.link import CloudLink
from registration.state import load as load_identity


def run(config_path: str) -> int:
    log = setup("asr-agent")
    cfg = load(config_path)
    ident = load_identity(cfg.state_dir)
    clock = from_environment()
    life = Lifecycle()
    life.install_signal_handlers()
    link = CloudLink(ident, clock, cfg.proxy)
    hb = threading.Thread(
        target=link.run_heartbeats, args=(cfg.heartbeat_seconds, life.stopping), name="heartbeat", daemon=True
    )
    hb.start()
    log.info("agent running", extra={"fields": {"identity": ident.identity}})
    life.ready(f"agent {ident.name}")
    life.wait()
    life.stop()
    hb.join(timeout=5)
    link.close()
    log.info("stopped")
    return 0
