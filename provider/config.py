"""The provider's TOML configuration.

    state_dir = "/var/lib/asr-provider"
    listen = "127.0.0.1:7500"          # where this site's agents reach the provider
    proxy = "http://user:pass@proxy:3128"   # optional
    heartbeat_seconds = 30
    sync_seconds = 300                 # periodic full inventory sync
    metrics_listen = "127.0.0.1:9465"  # optional: Prometheus metrics (plain HTTP); off when absent

    [[clouds]]
    name = "gold"
    hosts = ["hv01", "hv02"]
    sync = true                        # false: not synced to the vault (initial sync choice)

Relative paths are relative to the file's directory. Every key's type and range is checked
(``asrops.tomlconfig``), inside ``[[clouds]]`` tables too: anything wrong is InvalidConfig
(ASR-0014) naming the file, the key, the value and what is allowed; a malformed proxy URL is
InvalidProxy (ASR-0013).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from asrchannel.proxy import ProxyUrl
from asrops.tomlconfig import Table, read_toml

KEYS = ("state_dir", "listen", "proxy", "heartbeat_seconds", "sync_seconds", "metrics_listen", "clouds")
CLOUD_KEYS = ("name", "hosts", "sync")
LISTEN_ALLOWED = 'a "HOST:PORT" string with a port from 1 to 65535, e.g. "0.0.0.0:7500"'


@dataclass
class CloudDef:
    name: str
    hosts: list[str]
    sync: bool = True


@dataclass
class ProviderConfig:
    path: str
    state_dir: str
    listen: str = "127.0.0.1:7500"
    proxy: ProxyUrl | None = None
    heartbeat_seconds: float = 30.0
    sync_seconds: float = 300.0
    clouds: list[CloudDef] = field(default_factory=list)
    metrics_listen: str = ""        # HOST:PORT of the /metrics endpoint; "" serves none

    def cloud_of(self, host: str) -> CloudDef | None:
        for c in self.clouds:
            if host in c.hosts:
                return c
        return None


def _listen(top: Table) -> str:
    value = top.string("listen", "127.0.0.1:7500", allowed=LISTEN_ALLOWED)
    assert value is not None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise top.fail("listen", value, f"listen must be {LISTEN_ALLOWED}")
    return value


def load(path: str) -> ProviderConfig:
    path = os.path.abspath(path)
    top = Table(path, read_toml(path))
    top.check_keys(KEYS)
    state_dir = top.path("state_dir")
    clouds: list[CloudDef] = []
    seen_hosts: dict[str, str] = {}
    for t in top.tables("clouds"):
        t.check_keys(CLOUD_KEYS)
        name = t.required("name", "the VMM cloud's name (a non-empty string)")
        if any(c.name == name for c in clouds):
            raise t.fail("name", name, f"cloud {name!r} is defined twice; each [[clouds]] table names another cloud")
        hosts = t.strings("hosts", what="host names")
        for h in hosts:
            if h in seen_hosts:
                raise t.fail("hosts", hosts, f"host {h!r} is already in cloud {seen_hosts[h]!r}; "
                                             "a host belongs to one cloud")
            seen_hosts[h] = name
        clouds.append(CloudDef(name=name, hosts=hosts, sync=t.boolean("sync", True)))
    base = os.path.dirname(path)
    return ProviderConfig(
        path=path,
        state_dir=os.path.join(base, state_dir),
        listen=_listen(top),
        proxy=top.proxy(),
        heartbeat_seconds=top.seconds("heartbeat_seconds", 30.0),
        sync_seconds=top.seconds("sync_seconds", 300.0),
        clouds=clouds,
        metrics_listen=top.address("metrics_listen", "", "127.0.0.1:9465"),
    )
