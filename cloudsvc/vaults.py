"""Vaults and what lives directly in them: registration keys, storage accounts, networks."""

from __future__ import annotations

import ipaddress
import json
import os
import uuid
from dataclasses import dataclass
from typing import NamedTuple

from asrclock import Clock
from asrerrors import AlreadyExists, InvalidNetwork, KeyFileExpired, KeyFileSuperseded, NotFound, UsageError
from certs import keyfile
from certs.pki import CertKey, create_ca
from cloudsvc.naming import check_name
from cloudsvc.regions import region
from metastore.database import Conn, Database, IntegrityError, Row


@dataclass
class VaultRow:
    id: str
    name: str
    region: str
    created_at: float
    ca: CertKey
    key_expires_at: float
    state: str = "Active"      # "Deleting" while a vault delete --force job runs


class GeneratedKey(NamedTuple):
    key: keyfile.RegistrationKey
    key_id: str


class Vaults:
    def __init__(self, db: Database, service_ca: CertKey, clock: Clock, storage_dir: str) -> None:
        self.db = db
        self.service_ca = service_ca
        self.clock = clock
        self.storage_dir = storage_dir

    # ---- vaults -------------------------------------------------------------------------
    def create(self, name: str, region_name: str) -> VaultRow:
        check_name("vault", name)
        reg = region(region_name)
        vault_id = uuid.uuid4().hex[:16]
        ca = create_ca(f"asr vault {name} {vault_id}", parent=self.service_ca)
        try:
            with self.db.write() as conn:
                conn.execute(
                    "INSERT INTO vaults(id, name, region, created_at, ca_cert_pem, ca_key_pem)"
                    " VALUES (?,?,?,?,?,?)",
                    (vault_id, name, reg.name, self.clock.now(), ca.cert_pem.decode(), ca.key_pem.decode()),
                )
        except IntegrityError as exc:
            raise AlreadyExists(f"a vault named {name!r} already exists") from exc
        return self.get(vault_id)

    def _row(self, r: Row) -> VaultRow:
        key = self.db.one(
            "SELECT expires_at FROM vault_keys WHERE vault_id=? AND state='active'", (r["id"],)
        )
        return VaultRow(
            r["id"], r["name"], r["region"], r["created_at"],
            CertKey.from_pem(r["ca_cert_pem"].encode(), r["ca_key_pem"].encode()),
            key["expires_at"] if key else 0.0, r["state"],
        )

    def get(self, ref: str) -> VaultRow:
        r = self.db.one("SELECT * FROM vaults WHERE id=? OR name=?", (ref, ref))
        if r is None:
            raise NotFound(f"vault {ref!r} does not exist", action="List vaults with 'asr vault list'.")
        return self._row(r)

    def list_vaults(self) -> list[VaultRow]:
        return [self._row(r) for r in self.db.query("SELECT * FROM vaults ORDER BY name")]

    def set_state(self, conn: Conn, vault_id: str, state: str) -> None:
        conn.execute("UPDATE vaults SET state=? WHERE id=?", (state, vault_id))

    def delete_rows(self, conn: Conn, vault_id: str) -> None:
        """The vault and everything that references it (ON DELETE CASCADE). Callers empty it
        first (``teardown``); servers are revoked by the registrar before this."""
        conn.execute("DELETE FROM vaults WHERE id=?", (vault_id,))

    def storage_locations(self, vault_id: str) -> list[str]:
        """Directories of the vault's local-directory storage accounts (deleted with it)."""
        return [r["location"] for r in self.db.query(
            "SELECT location FROM storage_accounts WHERE vault_id=? AND backend='local'", (vault_id,))]

    # ---- registration keys ----------------------------------------------------------------
    # Two phases, so that a key file is never lost: generate_key makes a *pending* key that
    # registration refuses and that replaces nothing; the CLI writes the file durably, then
    # calls activate_key, which supersedes every older key of the vault in one transaction.
    # A failure in between leaves the older key valid (and the pending one unusable).
    def generate_key(self, ref: str, valid_days: int, endpoints: dict[str, list[str]]) -> GeneratedKey:
        if not 1 <= valid_days <= keyfile.MAX_VALID_DAYS:
            raise UsageError(
                f"--valid-days {valid_days} is out of range",
                causes=(f"A registration key is valid for 1 to {keyfile.MAX_VALID_DAYS} days.",),
            )
        v = self.get(ref)
        now = self.clock.now()
        secret = keyfile.new_secret()
        key = keyfile.RegistrationKey(
            vault_id=v.id, vault_name=v.name, region=v.region,
            endpoints={k: keyfile.endpoints_entry(eps) for k, eps in endpoints.items()},
            service_ca_pem=self.service_ca.cert_pem.decode(), vault_ca_pem=v.ca.cert_pem.decode(),
            secret=secret, issued_at=now, expires_at=now + valid_days * 86400,
        ).sealed()
        with self.db.write() as conn:
            cur = conn.execute(
                "INSERT INTO vault_keys(vault_id, secret_hash, issued_at, expires_at, state)"
                " VALUES (?,?,?,?, 'pending') RETURNING id",
                (v.id, keyfile.secret_hash(secret), now, key.expires_at),
            )
            key_id = cur.fetchone()[0]
        return GeneratedKey(key, str(key_id))

    def activate_key(self, ref: str, key_id: str) -> VaultRow:
        """Make pending key ``key_id`` the vault's key: every older key (active or pending) is
        superseded. Activating the active key again changes nothing (a retried call)."""
        v = self.get(ref)
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT id, state, expires_at FROM vault_keys WHERE vault_id=? AND id=?",
                (v.id, int(key_id) if key_id.isdigit() else -1),
            ).fetchone()
            if row is None:
                raise NotFound(f"vault {v.name!r} has no registration key {key_id!r}",
                               action="Generate a key with 'asr vault key'.")
            if row["state"] == "superseded":
                raise KeyFileSuperseded(
                    f"registration key {key_id} of vault {v.name!r} was superseded by a newer key",
                    action="Generate a new key with 'asr vault key'.")
            if self.clock.now() >= row["expires_at"]:
                raise KeyFileExpired(f"registration key {key_id} of vault {v.name!r} has expired")
            conn.execute(
                "UPDATE vault_keys SET state='superseded' WHERE vault_id=? AND id<? AND state!='superseded'",
                (v.id, row["id"]),
            )
            conn.execute("UPDATE vault_keys SET state='active' WHERE id=?", (row["id"],))
        return self.get(v.id)

    # ---- storage accounts -----------------------------------------------------------------
    def create_storage(
        self, ref: str, name: str, region_name: str, redundancy: str, backend: str, connection: str
    ) -> Row:
        v = self.get(ref)
        check_name("storage account", name)
        reg = region(region_name)
        redundancy = redundancy.upper() or "GRS"
        if redundancy not in ("GRS", "LRS"):
            raise UsageError(f"redundancy {redundancy!r} is not allowed", causes=("Allowed: GRS, LRS.",))
        backend = backend or "local"
        if backend not in ("local", "blob"):
            raise UsageError(f"storage backend {backend!r} is unknown", causes=("Allowed: local, blob.",))
        if backend == "blob" and not connection:
            raise UsageError("the blob backend needs --blob-connection-string")
        location = os.path.join(self.storage_dir, v.id, name) if backend == "local" else f"blob:{name}"
        try:
            with self.db.write() as conn:
                conn.execute(
                    "INSERT INTO storage_accounts(vault_id, name, region, redundancy, backend, location,"
                    " connection, created_at) VALUES (?,?,?,?,?,?,?,?)",
                    (v.id, name, reg.name, redundancy, backend, location, connection, self.clock.now()),
                )
        except IntegrityError as exc:
            raise AlreadyExists(f"storage account {name!r} already exists in vault {v.name!r}") from exc
        if backend == "local":
            os.makedirs(location, exist_ok=True)
        return self.storage(v.id, name)

    def storage(self, vault_id: str, name: str) -> Row:
        r = self.db.one("SELECT * FROM storage_accounts WHERE vault_id=? AND name=?", (vault_id, name))
        if r is None:
            raise NotFound(f"storage account {name!r} does not exist in this vault",
                           action="Create it with 'asr storage create'.")
        return r

    def delete_storage_row(self, conn: Conn, vault_id: str, name: str) -> None:
        """The account's row (caller's transaction); ``deletion`` checked it is unused and
        destroyed its data first."""
        conn.execute("DELETE FROM storage_accounts WHERE vault_id=? AND name=?", (vault_id, name))

    def list_storage(self, ref: str) -> list[Row]:
        v = self.get(ref)
        return self.db.query("SELECT * FROM storage_accounts WHERE vault_id=? ORDER BY name", (v.id,))

    # ---- virtual networks -----------------------------------------------------------------
    def create_network(
        self, ref: str, name: str, region_name: str, address_space: str, subnets: list[tuple[str, str]]
    ) -> Row:
        v = self.get(ref)
        check_name("network", name)
        reg = region(region_name)
        space = _cidr("address space", address_space)
        nets: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
        for sub_name, cidr in subnets:
            check_name("subnet", sub_name)
            net = _cidr(f"subnet {sub_name}", cidr)
            if net.version != space.version or not net.subnet_of(space):  # type: ignore[arg-type]
                raise InvalidNetwork(
                    f"subnet {sub_name} ({net}) is not inside the address space {space}",
                    action="Choose a subnet range inside the network's address space.",
                )
            for other_name, other in nets:
                if net.overlaps(other):
                    raise InvalidNetwork(f"subnet {sub_name} ({net}) overlaps subnet {other_name} ({other})")
            if any(n == sub_name for n, _ in nets):
                raise InvalidNetwork(f"subnet name {sub_name!r} is given twice")
            nets.append((sub_name, net))
        doc = json.dumps([{"name": n, "cidr": str(c)} for n, c in nets])
        try:
            with self.db.write() as conn:
                conn.execute(
                    "INSERT INTO networks(vault_id, name, region, address_space, subnets, created_at)"
                    " VALUES (?,?,?,?,?,?)",
                    (v.id, name, reg.name, str(space), doc, self.clock.now()),
                )
        except IntegrityError as exc:
            raise AlreadyExists(f"network {name!r} already exists in vault {v.name!r}") from exc
        return self.network(v.id, name)

    def network(self, vault_id: str, name: str) -> Row:
        r = self.db.one("SELECT * FROM networks WHERE vault_id=? AND name=?", (vault_id, name))
        if r is None:
            raise NotFound(f"network {name!r} does not exist in this vault",
                           action="Create it with 'asr network create'.")
        return r

    def delete_network_row(self, conn: Conn, vault_id: str, name: str) -> None:
        """The network's row (caller's transaction; ``deletion`` checked it is unused)."""
        conn.execute("DELETE FROM networks WHERE vault_id=? AND name=?", (vault_id, name))

    def list_networks(self, ref: str) -> list[Row]:
        v = self.get(ref)
        return self.db.query("SELECT * FROM networks WHERE vault_id=? ORDER BY name", (v.id,))


def _cidr(what: str, value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise InvalidNetwork(
            f"{what} {value!r} is not a valid CIDR range: {exc}",
            action="Write the range as ADDRESS/PREFIX with no host bits set, e.g. 10.0.0.0/16.",
        ) from exc
