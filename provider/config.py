"""The provider's TOML configuration.

    state_dir = "/var/lib/asr-provider"
    listen = "127.0.0.1:7500"          # where this site's agents reach the provider
    proxy = "http://user:pass@proxy:3128"   # optional
    heartbeat_seconds = 30
    sync_seconds = 300                 # periodic full inventory sync

    [[clouds]]
    name = "gold"
    hosts = ["hv01", "hv02"]
    sync = true                        # false: not synced to the vault (initial sync choice)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from asrchannel.proxy import ProxyUrl, parse_proxy
from asrerrors import InvalidConfig


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

    def cloud_of(self, host: str) -> CloudDef | None:
        for c in self.clouds:
            if host in c.hosts:
                return c
        return None


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise InvalidConfig(f"configuration file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"{path} is not valid TOML: {exc}") from exc


def load(path: str) -> ProviderConfig:
    path = os.path.abspath(path)
    raw = _read(path)
    known = {"state_dir", "listen", "proxy", "heartbeat_seconds", "sync_seconds", "clouds"}
    unknown = set(raw) - known
    if unknown:
        raise InvalidConfig(f"{path}: unknown keys {sorted(unknown)}; known keys {sorted(known)}")
    if "state_dir" not in raw:
        raise InvalidConfig(f"{path}: state_dir is required")
    clouds = []
    seen_hosts: dict[str, str] = {}
    for i, c in enumerate(raw.get("clouds", [])):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise InvalidConfig(f"{path}: clouds[{i}] needs a name")
        hosts = c.get("hosts", [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise InvalidConfig(f"{path}: clouds[{i}].hosts must be a list of host names")
        for h in hosts:
            if h in seen_hosts:
                raise InvalidConfig(f"{path}: host {h!r} is in clouds {seen_hosts[h]!r} and {c['name']!r}")
            seen_hosts[h] = c["name"]
        clouds.append(CloudDef(name=c["name"], hosts=list(hosts), sync=bool(c.get("sync", True))))
    proxy = parse_proxy(raw["proxy"]) if raw.get("proxy") else None
    base = os.path.dirname(path)
    return ProviderConfig(
        path=path,
        state_dir=os.path.join(base, raw["state_dir"]),
        listen=str(raw.get("listen", "127.0.0.1:7500")),
        proxy=proxy,
        heartbeat_seconds=float(raw.get("heartbeat_seconds", 30)),
        sync_seconds=float(raw.get("sync_seconds", 300)),
        clouds=clouds,
    )
