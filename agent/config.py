"""The agent's TOML configuration.

    state_dir = "/var/lib/asr-agent"
    vm_dir = "/var/lib/asr-agent/vms"     # the local hypervisor's VM definitions
    proxy = "http://proxy:3128"           # optional
    heartbeat_seconds = 30
    metrics_listen = "127.0.0.1:9466"     # optional: Prometheus metrics (plain HTTP); off when absent

    [throttle]                            # optional: upload limits (agent.replication.throttle)
    work_hours_mb_s = 5
    non_work_hours_mb_s = 40

Relative paths are relative to the file's directory. Every key's type and range is checked
(``asrops.tomlconfig``): anything wrong is InvalidConfig (ASR-0014) naming the file, the key,
the value and what is allowed; a malformed proxy URL is InvalidProxy (ASR-0013).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agent.replication.throttle import BandwidthSchedule, schedule_from
from asrchannel.proxy import ProxyUrl
from asrops.tomlconfig import Table, read_toml

KEYS = ("state_dir", "vm_dir", "proxy", "heartbeat_seconds", "metrics_listen", "throttle")


@dataclass
class AgentConfig:
    path: str
    state_dir: str
    vm_dir: str
    proxy: ProxyUrl | None = None
    heartbeat_seconds: float = 30.0
    metrics_listen: str = ""        # HOST:PORT of the /metrics endpoint; "" serves none
    throttle: BandwidthSchedule | None = None   # None: uploads are not limited


def load(path: str) -> AgentConfig:
    path = os.path.abspath(path)
    top = Table(path, read_toml(path))
    top.check_keys(KEYS)
    state_dir = top.path("state_dir")
    vm_dir = top.path("vm_dir")
    heartbeat = top.seconds("heartbeat_seconds", 30.0)
    base = os.path.dirname(path)
    return AgentConfig(
        path=path,
        state_dir=os.path.join(base, state_dir),
        vm_dir=os.path.join(base, vm_dir),
        proxy=top.proxy(),
        heartbeat_seconds=heartbeat,
        metrics_listen=top.address("metrics_listen", "", "127.0.0.1:9466"),
        throttle=schedule_from(top),
    )
