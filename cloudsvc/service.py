"""The cloud service's state: the stores and the domain objects the RPC layers call."""

from __future__ import annotations

import os
import threading

from asrclock import Clock
from certs.pki import CertKey
from cloudsvc.commands import Commands
from cloudsvc.config import CloudConfig
from cloudsvc.inventory import Inventory
from cloudsvc.jobs import Jobs
from cloudsvc.protection import Protection
from cloudsvc.registrar import Registrar
from cloudsvc.schema import MIGRATIONS
from cloudsvc.vaults import Vaults
from sqlitestore.database import Database


class CloudService:
    def __init__(self, config: CloudConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.stopping = threading.Event()
        self.db = Database(config.db_path, MIGRATIONS)
        with open(os.path.join(config.pki_dir, "ca.pem"), "rb") as f:
            ca_pem = f.read()
        with open(os.path.join(config.pki_dir, "ca.key"), "rb") as f:
            ca_key = f.read()
        self.service_ca = CertKey.from_pem(ca_pem, ca_key)
        self.vaults = Vaults(self.db, self.service_ca, clock, config.storage_dir)
        self.registrar = Registrar(self.db, self.vaults, clock)
        self.inventory = Inventory(self.db, clock)
        self.jobs = Jobs(self.db, clock)
        self.commands = Commands(self.db, self.jobs, clock)
        self.protection = Protection(self.db, clock, self.vaults, self.inventory, self.jobs, self.commands)
        from cloudsvc.replication import Replication

        self.replication = Replication(self.db, clock, self.vaults, self.inventory, self.protection,
                                       config.data_dir, self.stopping)

    def describe_replication(self, vault_id: str, vm_id: str, status: object) -> None:
        """Fill RPO, last replication and initial-replication progress (replication engine)."""
        self.replication.describe(vault_id, vm_id, status)

    def endpoints(self) -> dict[str, str]:
        return {"api": self.config.listen, "registration": self.config.registration_listen}

    def close(self) -> None:
        self.replication.close()
        self.db.close()
