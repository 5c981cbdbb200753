"""The agent's TOML configuration.

    state_dir = "/var/lib/asr-agent"
    vm_dir = "/var/lib/asr-agent/vms"     # the local hypervisor's VM definitions
    proxy = "http://proxy:3128"           # optional
    heartbeat_seconds = 30
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass

from asrchannel.proxy import ProxyUrl, parse_proxy
from asrerrors import InvalidConfig


@dataclass
class AgentConfig:
    path: str
    state_dir: str
    vm_dir: str
    proxy: ProxyUrl | None = None
    heartbeat_seconds: float = 30.0


def load(path: str) -> AgentConfig:
    path = os.path.abspath(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError as exc:
        raise InvalidConfig(f"configuration file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"{path} is not valid TOML: {exc}") from exc
    known = {"state_dir", "vm_dir", "proxy", "heartbeat_seconds"}
    unknown = set(raw) - known
    if unknown:
        raise InvalidConfig(f"{path}: unknown keys {sorted(unknown)}; known keys {sorted(known)}")
    for k in ("state_dir", "vm_dir"):
        if k not in raw:
            raise InvalidConfig(f"{path}: {k} is required")
    base = os.path.dirname(path)
    return AgentConfig(
        path=path,
        state_dir=os.path.join(base, raw["state_dir"]),
        vm_dir=os.path.join(base, raw["vm_dir"]),
        proxy=parse_proxy(raw["proxy"]) if raw.get("proxy") else None,
        heartbeat_seconds=float(raw.get("heartbeat_seconds", 30)),
    )
