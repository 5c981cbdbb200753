"""The cloud service's data directory and configuration.

    DATA_DIR/cloudsvc.toml      listen addresses and names (written by init)
    DATA_DIR/pki/               service CA and server certificate (keys 0600)
    DATA_DIR/operator.json      operator credential for `asr` (0600)
    DATA_DIR/metadata.db        SQLite metadata store (WAL)
    DATA_DIR/storage/           local-directory storage accounts
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field

from asrerrors import InvalidConfig


@dataclass
class CloudConfig:
    data_dir: str
    listen: str = "127.0.0.1:7443"
    registration_listen: str = "127.0.0.1:7444"
    names: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1"])
    # A server whose last heartbeat is older than this shows as NotConnected.
    heartbeat_timeout_seconds: float = 60.0
    metrics_listen: str = ""
    workers: int = 64

    @property
    def pki_dir(self) -> str:
        return os.path.join(self.data_dir, "pki")

    @property
    def db_path(self) -> str:
        return os.path.join(self.data_dir, "metadata.db")

    @property
    def operator_credentials(self) -> str:
        return os.path.join(self.data_dir, "operator.json")

    @property
    def storage_dir(self) -> str:
        return os.path.join(self.data_dir, "storage")

    def to_toml(self) -> str:
        names = ", ".join(f'"{n}"' for n in self.names)
        return (
            f'listen = "{self.listen}"\n'
            f'registration_listen = "{self.registration_listen}"\n'
            f"names = [{names}]\n"
            f"heartbeat_timeout_seconds = {self.heartbeat_timeout_seconds}\n"
            f'metrics_listen = "{self.metrics_listen}"\n'
            f"workers = {self.workers}\n"
        )


def load(data_dir: str) -> CloudConfig:
    data_dir = os.path.abspath(data_dir)
    path = os.path.join(data_dir, "cloudsvc.toml")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError as exc:
        raise InvalidConfig(
            f"{data_dir} is not an initialised cloud service data directory (no cloudsvc.toml)",
            action=f"Run 'asr-cloudsvc init --data-dir {data_dir}' first.",
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"{path} is not valid TOML: {exc}") from exc
    known = set(CloudConfig.__dataclass_fields__) - {"data_dir"}
    unknown = set(raw) - known
    if unknown:
        raise InvalidConfig(f"{path}: unknown keys {sorted(unknown)}; known keys {sorted(known)}")
    return CloudConfig(data_dir=data_dir, **raw)
