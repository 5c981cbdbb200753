"""The cloud service's composition root: builds every store and domain service once, wires
them, and starts and stops the background threads. Nothing else builds a service or starts
a thread; the gRPC layer (``server`` and the ``*_api`` modules) only translates between the
wire and these services, and importing a module never changes behaviour.

Owners of state (each the only writer of its tables):

=================  ==========================================================
``vaults``         vaults, vault_keys, storage_accounts, networks
``registrar``      servers, revoked (and ``init``'s first operator)
``operators``      operators (roles), operator_accounts, portal_sessions, signin_failures
``inventory``      clouds, hosts, vms
``items``          protected_items (``lifecycle``: the state machine)
``protection``     policies
``site``           network_mappings (``sitetosite``: pairing, mapping, placement)
``replicas``       replica_points, replica_status (pairings and what recovery hosts report)
``jobs``           jobs, job_tasks
``commands``       commands
``events``         events, health_seen
``replication``    replication_status, recovery_points (and the vault stores)
``recovered``      recovered_vms
``plans``          recovery_plans
``failback``       failback_sessions
``leases``         leases (named leases of singleton background work; jobs hold theirs on their rows)
``billing``        replication_usage (``replication`` meters commits through it)
=================  ==========================================================

Observing: ``metrics`` is the process's Prometheus registry (gRPC server metrics recorded by
the interceptor, the vault's figures read at scrape time by ``cloudsvc.metrics``), served on
``metrics_listen``; ``health_watch`` logs every change of a VM's health; ``readiness`` says
whether this process can serve (its metadata store answers), which the gRPC health service reports.

Several processes may serve the same vaults (issue 15; docs/design.md, "Several cloud
services"): each builds everything here over the shared database and storage, and ``leases``
(this process's holder id) decides which one runs each job (``Jobs.claim``, by the runner) and
each singleton task (maintenance, command expiry, reaping, the health watch).

The portal (``cloudsvc.portal``) is built here when ``portal_listen`` names an address: a Flask
application over these same services, served by cheroot over TLS with the server certificate.
"""

from __future__ import annotations

import logging
import os
import threading

from asrclock import Clock
from asrerrors import AsrError
from asrops.lifecycle import Watch
from asrops.metrics import Metrics
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
from cloudsvc.failover.runner import STUCK_AFTER_S as RUNNER_STUCK_AFTER_S
from cloudsvc.failover.runner import Runner
from cloudsvc.failover.site import SiteFailover
from cloudsvc.healthwatch import LEASE as HEALTH_LEASE
from cloudsvc.healthwatch import HealthWatch
from cloudsvc.inventory import Inventory
from cloudsvc.jobs import Jobs
from cloudsvc.leases import Leases, holder_id
from cloudsvc.lifecycle import ProtectedItems
from cloudsvc.metrics import VaultCollector
from cloudsvc.operators import Operators
from cloudsvc.portal.server import PortalServer
from cloudsvc.protection import Protection
from cloudsvc.readiness import Readiness
from cloudsvc.registrar import Registrar
from cloudsvc.replicas import Replicas
from cloudsvc.replication import MAINTENANCE_LEASE, Replication
from cloudsvc.schema import MIGRATIONS
from cloudsvc.sitetosite import SiteToSite
from cloudsvc.teardown import Teardown
from cloudsvc.vaults import Vaults
from metastore.database import open_database

log = logging.getLogger(__name__)

class CloudService:
    def __init__(self, config: CloudConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.stopping = threading.Event()
        self.db = open_database(config.database, MIGRATIONS)
        with open(os.path.join(config.pki_dir, "ca.pem"), "rb") as f:
            ca_pem = f.read()
        with open(os.path.join(config.pki_dir, "ca.key"), "rb") as f:
            ca_key = f.read()
        self.service_ca = CertKey.from_pem(ca_pem, ca_key)
        db = self.db
        # several processes may serve these vaults: this one's name in the leases it holds
        self.leases = Leases(db, clock, holder_id())
        self.events = Events(db, clock)
        self.vaults = Vaults(db, self.service_ca, clock, config.storage_dir)
        self.items = ProtectedItems(db, clock, self.events)
        self.jobs = Jobs(db, clock)
        self.commands = Commands(db, self.jobs, clock)
        self.inventory = Inventory(db, clock, self.items, self.events)
        self.registrar = Registrar(db, self.vaults, clock, self.commands, self.inventory, self.events)
        self.operators = Operators(db, clock, self.service_ca, config.listen)
        self.recovered = Recovered(db, clock, self.vaults)
        self.site = SiteToSite(db, clock, self.inventory, self.events)
        self.replicas = Replicas(db, clock, self.items, self.events)
        self.protection = Protection(db, clock, self.vaults, self.inventory, self.jobs, self.commands, self.items,
                                     self.recovered, self.events, self.site, self.replicas)
        self.billing = Billing(db, clock)
        self.replication = Replication(db, clock, self.vaults, self.items, self.events, config.data_dir,
                                       self.stopping, meter=self.billing.meter)
        self.plans = Plans(db, clock, self.inventory)
        self.failback = FailbackServer(db, clock)
        self.operations = Operations(db, clock, self.inventory, self.items, self.jobs, self.commands,
                                     self.replication, self.recovered, self.plans,
                                     SiteFailover(db, self.inventory, self.items, self.site, self.replicas))
        self.runner = Runner(db, clock, self.jobs, self.commands, self.items, self.replication, self.recovered,
                             self.failback, self.operations, self.stopping, self.leases)
        self.teardown = Teardown(db, clock, self.vaults, self.items, self.jobs, self.commands, self.inventory,
                                 self.registrar, self.recovered, self.replication, self.events)
        self.deletion = Deletion(db, clock, self.vaults, self.items, self.recovered, self.replication, self.events)
        self.replication.lease = self.leases.acquire
        self.operations.wake = self.runner.wake
        self.operations.claim = self.runner.claim_in
        self.commands.on_complete.append(self.runner.wake)
        self.runner.add_kinds(FAILOVER_KINDS)
        self.runner.add_kinds(self.teardown.kinds(), self.teardown.handlers(self.runner))
        # retention keeps the points recovered VMs are being made from or were made from
        self.replication.pins.append(self.recovered.pinned_points)
        # a protection's point records go with it
        self.items.on_removed.append(self.replication.forget_vm)
        # site to site: the replica's health and points are what its recovery host reports
        self.items.on_removed.append(self.replicas.forget_vm)
        self.replication.site_health = self.replicas.health
        self.replication.site_rpo = self.replicas.rpo
        self.replication.reverse_health = self.replicas.reverse_health
        self.metrics = Metrics()
        self.metrics.register(VaultCollector(self.vaults, self.replication, self.jobs, self.commands, self.registrar,
                                             clock, config.heartbeat_timeout_seconds))
        self.health_watch = HealthWatch(self.replication, self.stopping, lease=self.leases.acquire)
        # whether this process can serve (its metadata store answers): drives the gRPC health
        self.readiness = Readiness(db, self.stopping)
        self.portal: PortalServer | None = None
        if config.portal_listen:
            from cloudsvc.portal.app import create_app

            self.portal = PortalServer(create_app(self), config.portal_listen, config.pki_dir,
                                       os.path.join(config.data_dir, "cloudsvc.toml"))

    def portal_url(self) -> str:
        """Where operators sign in to the portal ("" when it is not served)."""
        if not self.config.portal_listen:
            return ""
        host, _, port = self.config.portal_listen.rpartition(":")
        if host in ("0.0.0.0", "[::]", "::"):
            host = self.config.names[0] if self.config.names else "localhost"
        return f"https://{host}:{port}/"

    def endpoints(self) -> dict[str, list[str]]:
        return self.config.public_endpoints()

    def start(self, watch: Watch | None = None) -> None:
        """Start the background work: retention and GC, the job runner, the health watch, the
        readiness probe of the metadata store (PostgreSQL), and
        the metrics endpoint when ``metrics_listen`` names one. ``watch`` is the daemon core's
        (``asrops.lifecycle``): the job runner must keep turning. Retention and GC are not
        watched: a GC of a large store rightly runs for many minutes."""
        self.metrics.serve(self.config.metrics_listen, os.path.join(self.config.data_dir, "cloudsvc.toml"))
        self.replication.start()
        self.runner.start(watch("job-runner", RUNNER_STUCK_AFTER_S) if watch else lambda: None)
        self.health_watch.start()
        self.readiness.start()
        if self.portal is not None:
            self.portal.start()

    def close(self) -> None:
        self.stopping.set()
        self.commands.notify()
        self.metrics.close()
        if self.portal is not None:
            self.portal.close()
        self.runner.stop()
        self.health_watch.join()
        self.readiness.close()
        self.replication.close()
        try:  # another process may maintain the vaults at once, not a lease period later
            for name in (MAINTENANCE_LEASE, HEALTH_LEASE):
                self.leases.release(name)
        except AsrError:
            log.exception("releasing the maintenance lease at shutdown failed")
        self.db.close()
