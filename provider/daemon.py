"""The running provider: heartbeats to the cloud and serves its agents."""

from __future__ import annotations

import threading

from asrclock import from_environment
from asrops.lifecycle import Lifecycle
from asrops.logs import setup
from provider.config import load
from registration.link import CloudLink
from registration.state import load as load_identity


def run(config_path: str) -> int:
    log = setup("asr-provider")
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
    log.info("provider running", extra={"fields": {"identity": ident.identity, "listen": cfg.listen}})
    life.ready(f"provider {ident.name}")
    life.wait()
    life.stop()
    hb.join(timeout=5)
    link.close()
    log.info("stopped")
    return 0
