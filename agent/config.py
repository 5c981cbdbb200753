"""The agent's TOML configuration.

    state_dir = "/var/lib/asr-agent"
    vm_dir = "/var/lib/asr-agent/vms"     # the local hypervisor's VM definitions
    proxy = "http://proxy:3128"           # optional
    heartbeat_seconds = 30
    metrics_listen = "127.0.0.1:9466"     # optional: Prometheus metrics (plain HTTP); off when absent
    replica_listen = "0.0.0.0:9470"       # optional (site-to-site): serve replicas to primaries; off when absent
    replica_dir = "/var/lib/asr-agent/replicas"   # default: <state_dir>/replicas

    [throttle]                            # optional: upload limits (agent.replication.throttle)
    work_hours_mb_s = 5
    non_work_hours_mb_s = 40

Relative paths are relative to the file's directory. The model is strict and closed
(``asrops.configfile``): anything wrong, in ``[throttle]`` too, is one InvalidConfig (ASR-0014)
naming the file and, for each key, the value and what is allowed; a malformed proxy URL is
InvalidProxy (ASR-0013). Every key's default is in docs/operations.md (generated from here).
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import Field

from agent.replication.throttle import BandwidthSchedule, ThrottleSettings
from asrops import configfile
from asrops.configfile import AddressOrOff, ConfigFile, ConfigPath, Kind, MetricsAddress, OptionalPath, Proxy, Seconds


class AgentConfig(ConfigFile):
    state_dir: ConfigPath = Field(description="the agent's identity, keys and replication state")
    vm_dir: ConfigPath = Field(description="the local hypervisor's VM definitions")
    proxy: Proxy = Field(None, description="the HTTP CONNECT proxy to reach the cloud through; none: direct")
    heartbeat_seconds: Seconds = Field(30.0, description="how often the agent reports to the cloud")
    metrics_listen: MetricsAddress = Field("", description="where to serve Prometheus metrics (plain HTTP); "
                                                           '"": not served')
    throttle: Annotated[ThrottleSettings | None, Kind("table", "a table, written [throttle] on a line of its own")] \
        = Field(None, description="the host's upload limits, shared by all its VMs; none: no limit")
    replica_listen: AddressOrOff = Field("", description="site-to-site: where this host serves the replicas it "
                                                         'holds to primary hosts (TLS); "": holds none')
    replica_dir: OptionalPath = Field("", description='site-to-site: the replicas\' stores and disks; "": '
                                                      "<state_dir>/replicas")

    @property
    def replica_path(self) -> str:
        """Where this host keeps the replicas it holds (site-to-site, ``agent.replica``)."""
        return self.replica_dir or os.path.join(self.state_dir, "replicas")

    @property
    def bandwidth(self) -> BandwidthSchedule | None:
        """The upload schedule; None: uploads are not limited."""
        return self.throttle.schedule() if self.throttle is not None else None


def load(path: str) -> AgentConfig:
    return configfile.load(path, AgentConfig)
