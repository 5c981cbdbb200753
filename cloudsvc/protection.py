"""Replication policies, protected items and the operations allowed on them.

A cloud is protected with a policy; saving the policy configures every host of the cloud
through its provider, as a job. A VM is protected only when its cloud is, after validation
against every rule of ``vmspec.protection_violations``.
"""

from __future__ import annotations

import json
import re
import uuid

from asrclock import Clock
from asrerrors import InvalidPolicy, PermissionDenied, StateConflict, UsageError, ValidationFailed
from asrpb import control_pb2, inventory_pb2
from chunkfmt import COMPRESSION, DEFAULT_COMPRESSION
from cloudsvc.commands import Commands
from cloudsvc.events import CLOUD_PAIRED, POLICY_SAVED, Events, Severity
from cloudsvc.failover.recovered import Recovered
from cloudsvc.inventory import Inventory, dumps_policy, loads_policy, parse_vm, vm_to_spec
from cloudsvc.jobs import Jobs
from cloudsvc.lifecycle import Item, ItemState, Op, ProtectedItems
from cloudsvc.replicas import Replicas
from cloudsvc.sitetosite import ONPREM_TO_CLOUD, ONPREM_TO_ONPREM, SiteToSite
from cloudsvc.vaults import VaultRow, Vaults
from metastore.database import Conn, Database, Row
from vmspec import protection_violations

COPY_FREQUENCIES = (30, 300, 900)


def validate_policy(p: inventory_pb2.Policy) -> None:
    problems = []
    if p.copy_frequency_seconds not in COPY_FREQUENCIES:
        problems.append(f"copy frequency {p.copy_frequency_seconds}s is not allowed; allowed: 30s, 5m, 15m")
    if not 0 <= p.retention_hours <= 24:
        problems.append(f"retention {p.retention_hours} h is out of range; allowed: 0 to 24 hours")
    if not 0 <= p.app_consistent_hours <= 12:
        problems.append(f"app-consistent frequency {p.app_consistent_hours} h is out of range; "
                        "allowed: 0 (none) or 1 to 12 hours")
    elif p.app_consistent_hours and p.app_consistent_hours > max(p.retention_hours, 0):
        problems.append(f"app-consistent frequency {p.app_consistent_hours} h must not exceed the retention "
                        f"({p.retention_hours} h)")
    if p.start != "now" and not re.fullmatch(r"([01]\d|2[0-3]):(00|30)", p.start or ""):
        problems.append(f"start {p.start!r} is not allowed; allowed: now, or HH:MM on a 30-minute boundary "
                        "(e.g. 01:30)")
    if p.compression and p.compression not in COMPRESSION:
        problems.append(f"compression {p.compression!r} is not allowed; allowed: {', '.join(COMPRESSION)} "
                        f"(default {DEFAULT_COMPRESSION})")
    if problems:
        raise InvalidPolicy("the replication policy is invalid", details=problems,
                            action="Correct the values listed and save the policy again.")


def describe_policy(p: inventory_pb2.Policy) -> str:
    target = f"recovery cloud {p.target_cloud}" if p.target_cloud else f"storage {p.storage}"
    return (f"{target}, copy every {p.copy_frequency_seconds}s, retention {p.retention_hours}h, "
            f"app-consistent {f'every {p.app_consistent_hours}h' if p.app_consistent_hours else 'none'}, "
            f"start {p.start or 'now'}, encryption {'on' if p.encrypt else 'off'}, "
            f"compression {p.compression or DEFAULT_COMPRESSION}")


class Protection:
    """Replication policies of clouds, and enabling/disabling protection of VMs (the
    lifecycle's protect and unprotect operations, each as a job)."""

    def __init__(self, db: Database, clock: Clock, vaults: Vaults, inventory: Inventory, jobs: Jobs,
                 commands: Commands, items: ProtectedItems, recovered: Recovered, events: Events,
                 site: SiteToSite, replicas: Replicas) -> None:
        self.site = site
        self.replicas = replicas
        self.db = db
        self.clock = clock
        self.vaults = vaults
        self.inventory = inventory
        self.jobs = jobs
        self.commands = commands
        self.items = items
        self.recovered = recovered
        self.events = events
        jobs.hooks["EnableProtection"] = self._job_done
        jobs.hooks["DisableProtection"] = self._job_done

    # ---- clouds ---------------------------------------------------------------------------
    def protect_cloud(self, vault: VaultRow, cloud: str, policy: inventory_pb2.Policy) -> str:
        validate_policy(policy)
        row = self.inventory.cloud(vault.id, cloud)
        if row["missing_since"]:
            raise StateConflict(f"cloud {cloud!r} is no longer in provider {row['provider']!r}'s configuration",
                                action="Add it back to the provider's configuration first.")
        if bool(policy.storage) == bool(policy.target_cloud):
            raise InvalidPolicy("a replication policy names either a storage account or a target cloud, not "
                                f"{'both' if policy.storage else 'neither'}",
                                action="Pass --storage S (to the vault) or --target-cloud C (site to site).")
        target = None
        if policy.target_cloud:
            if policy.encrypt:
                raise InvalidPolicy("--encrypt is customer-managed encryption of the vault's storage; site to site "
                                    "keeps the data on the recovery host, never in the vault",
                                    action="Protect to the target cloud without --encrypt.")
            target = self.site.check_pairing(vault.id, row, policy.target_cloud)
        else:
            sa = self.vaults.storage(vault.id, policy.storage)
            if sa["region"] != vault.region:
                raise InvalidPolicy(f"storage account {policy.storage!r} is in {sa['region']}, the vault in "
                                    f"{vault.region}", action="Use a storage account in the vault's region.")
            if sa["redundancy"] != "GRS":
                raise InvalidPolicy(f"storage account {policy.storage!r} is {sa['redundancy']}; replication needs "
                                    "GRS", action="Create a storage account with --redundancy GRS.")
        before = self.policy(vault.id, cloud)
        if before is not None and before.target_cloud != policy.target_cloud:
            self.site.require_not_in_use(vault.id, cloud)
        prov = self.db.one("SELECT encryption FROM servers WHERE vault_id=? AND role='provider' AND name=?",
                           (vault.id, row["provider"]))
        if policy.encrypt and (prov is None or not prov["encryption"]):
            raise InvalidPolicy(
                f"encryption was requested but provider {row['provider']!r} did not register with "
                "customer-managed encryption",
                action="Register the provider again with --encryption, or protect without --encrypt.")
        policy.cloud = cloud
        policy.compression = policy.compression or DEFAULT_COMPRESSION  # "" (an older client): the default
        hosts = self.inventory.hosts(vault.id, cloud)
        with self.db.write() as conn:
            conn.execute("INSERT INTO policies(vault_id, cloud, policy, created_at) VALUES (?,?,?,?)"
                         " ON CONFLICT (vault_id, cloud) DO UPDATE SET policy=excluded.policy,"
                         " created_at=excluded.created_at",
                         (vault.id, cloud, dumps_policy(policy), self.clock.now()))
            tasks = []
            for h in hosts:
                cmd = control_pb2.Command(configure_host=control_pb2.ConfigureHost(
                    host=h["name"], policy=policy, vault_id=vault.id))
                cid = self.commands.enqueue(conn, vault.id, row["provider"], cmd)
                tasks.append((f"Configure host {h['name']}", cid))
            job_id = self.jobs.create(conn, vault.id, "ConfigureProtection", cloud, tasks)
            self.events.record(conn, vault.id, Severity.INFO, POLICY_SAVED,
                               f"replication policy of cloud {cloud} saved (job {job_id}): {describe_policy(policy)}",
                               server=f"provider/{row['provider']}")
            if target is not None:
                self.events.record(conn, vault.id, Severity.INFO, CLOUD_PAIRED,
                                   f"cloud {cloud} (provider {row['provider']}) paired with cloud {target['name']} "
                                   f"(provider {target['provider']}): site to site",
                                   server=f"provider/{row['provider']}")
        self.commands.notify()
        return job_id

    def policy(self, vault_id: str, cloud: str) -> inventory_pb2.Policy | None:
        row = self.db.one("SELECT policy FROM policies WHERE vault_id=? AND cloud=?", (vault_id, cloud))
        return loads_policy(row["policy"]) if row else None

    # ---- VMs ------------------------------------------------------------------------------
    def protect_vm(self, vault: VaultRow, ref: str, chosen_nic: int | None, recovery_host: str = "") -> str:
        row = self.inventory.find_vm(vault.id, ref)
        vm = parse_vm(row)
        self.items.require(vault.id, vm.vm_id, vm.name, Op.PROTECT)
        if row["missing_since"]:
            raise StateConflict(f"VM {vm.name!r} is no longer reported by provider {row['provider']!r}")
        live = [r for r in self.recovered.of_source(vault.id, vm.vm_id, "failover") if r["state"] != "Deleting"]
        if live:
            raise StateConflict(
                f"VM {vm.name!r} runs at the recovery site (recovered VM {live[-1]['name']}, {live[-1]['id']}); "
                "protecting the on-premises copy again would make two active copies of one VM",
                action="Keep the recovered VM as the VM, or fail it back before its protection was disabled.")
        policy = self.policy(vault.id, row["cloud"])
        if policy is None:
            raise StateConflict(f"cloud {row['cloud']!r} of VM {vm.name!r} has no replication policy",
                                action=f"Protect the cloud first: asr cloud protect {row['cloud']} --storage S "
                                       "(or --target-cloud C)")
        violations = protection_violations(vm_to_spec(vm), chosen_nic)
        if violations:
            raise ValidationFailed(f"VM {vm.name!r} cannot be protected ({len(violations)} violations)",
                                   details=violations)
        if recovery_host and not policy.target_cloud:
            raise UsageError(f"--recovery-host applies to site to site; cloud {row['cloud']!r} replicates to storage "
                             f"account {policy.storage!r}", action="Leave out --recovery-host.")
        if policy.target_cloud:
            return self._protect_to_site(vault, row, vm, policy, chosen_nic, recovery_host)
        with self.db.write() as conn:
            job_id = self.jobs.create(conn, vault.id, "EnableProtection", vm.name, [],
                                      context={"vm_id": vm.vm_id, "scenario": ONPREM_TO_CLOUD}, open_=True)
            item = self.items.create(conn, vault.id, vm_id=vm.vm_id, name=vm.name, cloud=row["cloud"],
                                     provider=row["provider"], policy_json=dumps_policy(policy), job_id=job_id)
            cmd = control_pb2.Command(enable_replication=control_pb2.EnableReplication(
                host=row["host"], vm_id=vm.vm_id, vm_name=vm.name, policy=policy, vault_id=vault.id))
            cid = self.commands.enqueue(conn, vault.id, row["provider"], cmd, epoch=item.epoch)
            self.jobs.add_task(conn, job_id, f"Enable replication on host {row['host']}", cid)
        self.commands.notify()
        return job_id

    def _protect_to_site(self, vault: VaultRow, row: Row, vm: inventory_pb2.Vm, policy: inventory_pb2.Policy,
                         chosen_nic: int | None, recovery_host: str) -> str:
        """Site to site: map the NIC's network, place the replica, then one job with two tasks —
        the recovery host accepts the replica (AcceptReplica, through its own provider) and the
        primary ships to it (EnableReplication with the replica target), both under one fresh
        pairing id that both hosts check."""
        nics = [vm.nics[chosen_nic]] if chosen_nic is not None else list(vm.nics)
        self.site.check_mapped(vault.id, vm.name, row["cloud"], policy.target_cloud, [n.network for n in nics])
        needed = sum(int(d.virtual_size) for d in vm.disks)
        host = self.site.place(vault.id, policy.target_cloud, vm.name, needed, recovery_host)
        pairing_id = uuid.uuid4().hex
        with self.db.write() as conn:
            job_id = self.jobs.create(conn, vault.id, "EnableProtection", vm.name, [],
                                      context={"vm_id": vm.vm_id, "scenario": ONPREM_TO_ONPREM,
                                               "pairing_id": pairing_id}, open_=True)
            item = self.items.create(conn, vault.id, vm_id=vm.vm_id, name=vm.name, cloud=row["cloud"],
                                     provider=row["provider"], policy_json=dumps_policy(policy), job_id=job_id,
                                     recovery_cloud=policy.target_cloud, recovery_host=host["name"],
                                     pairing_id=pairing_id)
            self.replicas.pair(conn, vault.id, vm.vm_id, pairing_id, host["name"])
            accept = control_pb2.Command(accept_replica=control_pb2.AcceptReplica(
                host=host["name"], vm_id=vm.vm_id, vm_name=vm.name, source_host=row["host"], pairing_id=pairing_id,
                policy=policy, vault_id=vault.id, disks=vm.disks))
            cid = self.commands.enqueue(conn, vault.id, host["provider"], accept, epoch=item.epoch)
            self.jobs.add_task(conn, job_id, f"Accept the replica on recovery host {host['name']} (cloud "
                               f"{policy.target_cloud})", cid)
            enable = control_pb2.Command(enable_replication=control_pb2.EnableReplication(
                host=row["host"], vm_id=vm.vm_id, vm_name=vm.name, policy=policy, vault_id=vault.id,
                replica_target=control_pb2.ReplicaTarget(recovery_host=host["name"], address=host["replica_address"],
                                                         pairing_id=pairing_id)))
            cid = self.commands.enqueue(conn, vault.id, row["provider"], enable, epoch=item.epoch)
            self.jobs.add_task(conn, job_id, f"Enable replication on host {row['host']} to {host['name']}", cid)
        self.commands.notify()
        return job_id

    def unprotect_vm(self, vault: VaultRow, ref: str, force: bool = False) -> str:
        """Disable protection. The site is told to stop replicating and the item is removed when
        it answers; with ``force`` (the site is gone) the item is removed without waiting, and a
        job stuck waiting for the site is cancelled. Points go with the item."""
        row = self.inventory.find_vm(vault.id, ref)
        vm = parse_vm(row)
        op = Op.FORCE_UNPROTECT if force else Op.UNPROTECT
        state = self.items.require(vault.id, vm.vm_id, vm.name, op)
        if state == ItemState.SOURCE_MISSING and not force:  # pragma: no cover - the table refuses it first
            raise StateConflict(f"VM {vm.name!r} is SourceMissing", action="Use --force.")
        with self.db.write() as conn:
            job_id = self.jobs.create(conn, vault.id, "DisableProtection", vm.name, [],
                                      context={"vm_id": vm.vm_id, "force": force}, open_=True)
            if force:
                held_by = self.items.take_over(conn, vault.id, vm.vm_id, job_id)
                if held_by:
                    self.jobs.cancel(conn, held_by, StateConflict(
                        f"protection of {vm.name} was disabled by force (job {job_id})"))
                item = self.items.get(vault.id, vm.vm_id, conn)
            else:
                item = self.items.begin(conn, vault.id, vm.vm_id, Op.UNPROTECT, job_id)
            assert item is not None
            cmd = control_pb2.Command(disable_replication=control_pb2.DisableReplication(
                host=row["host"], vm_id=vm.vm_id, vm_name=vm.name))
            cid = self.commands.enqueue(conn, vault.id, row["provider"], cmd, epoch=item.epoch)
            if force:
                # The command stays queued for the site if it ever returns; the job does not wait.
                self.jobs.add_task(conn, job_id, f"Disable replication on host {row['host']} (not waited for: "
                                   "--force)", "", done=True)
            else:
                self.jobs.add_task(conn, job_id, f"Disable replication on host {row['host']}", cid)
            if item.site_to_site:
                self._release(conn, vault.id, item, force, job_id)
        self.commands.notify()
        return job_id

    def _release(self, conn: Conn, vault_id: str, item: Item, force: bool, job_id: str) -> None:
        """Site to site: the recovery host lets the replica go (through its own provider)."""
        h = conn.execute("SELECT provider FROM hosts WHERE vault_id=? AND name=?",
                         (vault_id, item.recovery_host)).fetchone()
        name = f"Release the replica on recovery host {item.recovery_host}"
        if h is None:
            self.jobs.add_task(conn, job_id, f"{name} (not sent: the host is no longer in the inventory)", "",
                               done=True)
            return
        cmd = control_pb2.Command(release_replica=control_pb2.ReleaseReplica(
            host=item.recovery_host, vm_id=item.vm_id, vm_name=item.name, pairing_id=item.pairing_id,
            delete_data=True))
        cid = self.commands.enqueue(conn, vault_id, h["provider"], cmd, epoch=item.epoch)
        if force:
            self.jobs.add_task(conn, job_id, f"{name} (not waited for: --force)", "", done=True)
        else:
            self.jobs.add_task(conn, job_id, name, cid)

    def request_from_site(self, vault: VaultRow, provider: str, vm_name: str, nic: int | None, disable: bool) -> str:
        """Protection asked for from the VMM side (``asr-provider vm protect``): only for a VM
        that provider reported."""
        row = self.inventory.find_vm(vault.id, vm_name)
        if row["provider"] != provider:
            raise PermissionDenied(f"VM {vm_name!r} is managed by another provider",
                                   action="Run the command on the provider that manages the VM.")
        if disable:
            return self.unprotect_vm(vault, row["vm_id"])
        return self.protect_vm(vault, row["vm_id"], nic)

    def _job_done(self, conn: Conn, job: Row, ok: bool) -> None:
        ctx = json.loads(job["context"])
        out = self.items.end(conn, job["vault_id"], ctx["vm_id"], job["id"], ok)
        if ok and out.item is None and job["kind"] == "DisableProtection":
            # a test VM (forced unprotect during a test failover) goes with the protection;
            # a failed-over VM stays: it is the production VM now
            self.recovered.delete_of_source(conn, job["vault_id"], ctx["vm_id"], "test")
