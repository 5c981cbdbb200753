"""The cloud service's composition root: builds every store and domain service once, wires
them, and starts and stops the background threads. Nothing else builds a service or starts
a thread; the gRPC layer (``server`` and the ``*_api`` modules) only translates between the
wire and these services, and importing a module never changes behaviour.

Owners of state (each the only writer of its tables):

=================  ==========================================================
``vaults``         vaults, vault_keys, storage_accounts, networks
``registrar``      operators, servers, revoked
``inventory``      clouds, hosts, vms
``items``          protected_items (``lifecycle``: the state machine)
``protection``     policies
``jobs``           jobs, job_tasks
``commands``       commands
``events``         events, health_seen
``replication``    replication_status, recovery_points (and the vault stores)
``recovered``      recovered_vms
``plans``          recovery_plans
``failback``       failback_sessions
=================  ==========================================================
"""

from __future__ import annotations

import os
import threading

from asrclock import Clock
from certs.pki import CertKey
from cloudsvc.billing import Billing
from cloudsvc.commands import Commands
from cloudsvc.config import CloudConfig
from cloudsvc.deletion import Deletion
from cloudsvc.events import Events
from cloudsvc.failover.failback import FailbackServer
from cloudsvc.failover.operations import KINDS as FAILOVER_KINDS
from cloudsvc.failover.operations import Operations
from cloudsvc.failover.plans import Plans
from cloudsvc.failover.recovered import Recovered
from cloudsvc.failover.runner import Runner
from cloudsvc.inventory import Inventory
from cloudsvc.jobs import Jobs
from cloudsvc.lifecycle import ProtectedItems
from cloudsvc.protection import Protection
from cloudsvc.registrar import Registrar
from cloudsvc.replication import Replication
from cloudsvc.schema import MIGRATIONS
from cloudsvc.teardown import Teardown
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
        db = self.db
        self.events = Events(db, clock)
        self.vaults = Vaults(db, self.service_ca, clock, config.storage_dir)
        self.items = ProtectedItems(db, clock, self.events)
        self.jobs = Jobs(db, clock)
        self.commands = Commands(db, self.jobs, clock)
        self.inventory = Inventory(db, clock, self.items, self.events)
        self.registrar = Registrar(db, self.vaults, clock, self.commands, self.inventory, self.events)
        self.recovered = Recovered(db, clock, self.vaults)
        self.protection = Protection(db, clock, self.vaults, self.inventory, self.jobs, self.commands, self.items,
                                     self.recovered, self.events)
        self.replication = Replication(db, clock, self.vaults, self.items, self.events, config.data_dir,
                                       self.stopping)
        self.plans = Plans(db, clock, self.inventory)
        self.failback = FailbackServer(db, clock)
        self.operations = Operations(db, clock, self.inventory, self.items, self.jobs, self.commands,
                                     self.replication, self.recovered, self.plans)
        self.runner = Runner(db, clock, self.jobs, self.commands, self.items, self.replication, self.recovered,
                             self.failback, self.operations, self.stopping)
        self.teardown = Teardown(db, clock, self.vaults, self.items, self.jobs, self.commands, self.inventory,
                                 self.registrar, self.recovered, self.replication, self.events)
        self.billing = Billing(db, clock)
        self.deletion = Deletion(db, clock, self.vaults, self.items, self.recovered, self.replication, self.events)
        self.runner.add_kinds(FAILOVER_KINDS)
        self.runner.add_kinds(self.teardown.kinds(), self.teardown.handlers(self.runner))
        # retention keeps the points recovered VMs are being made from or were made from
        self.replication.pins.append(self.recovered.pinned_points)
        # a protection's point records go with it
        self.items.on_removed.append(self.replication.forget_vm)

    def endpoints(self) -> dict[str, str]:
        return {"api": self.config.listen, "registration": self.config.registration_listen}

    def start(self) -> None:
        """Start the background work: retention and GC, and the job runner."""
        self.replication.start()
        self.runner.start()

    def close(self) -> None:
        self.stopping.set()
        self.commands.notify()
        self.runner.stop()
        self.replication.close()
        self.db.close()
