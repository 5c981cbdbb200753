"""The cloud service's state: the stores and the domain objects the RPC layers call."""

from __future__ import annotations

import os

from asrclock import Clock
from certs.pki import CertKey
from cloudsvc.config import CloudConfig
from cloudsvc.db import Database
from cloudsvc.registrar import Registrar
from cloudsvc.vaults import Vaults


class CloudService:
    def __init__(self, config: CloudConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.db = Database(config.db_path)
        with open(os.path.join(config.pki_dir, "ca.pem"), "rb") as f:
            ca_pem = f.read()
        with open(os.path.join(config.pki_dir, "ca.key"), "rb") as f:
            ca_key = f.read()
        self.service_ca = CertKey.from_pem(ca_pem, ca_key)
        self.vaults = Vaults(self.db, self.service_ca, clock, config.storage_dir)
        self.registrar = Registrar(self.db, self.vaults, clock)

    def endpoints(self) -> dict[str, str]:
        return {"api": self.config.listen, "registration": self.config.registration_listen}

    def close(self) -> None:
        self.db.close()
