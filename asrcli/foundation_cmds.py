"""asr region/vault/storage/network/server commands."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import durablefile
from asrcli.client import Client
from asrcli.jobwait import add_wait_options, wait_job
from asrcli.outfile import checked_target, write_failed
from asrcli.output import show, table, to_doc
from asrclock import iso, iso_json
from asrerrors import AsrError, Unreachable, UsageError
from asrpb import common_pb2, operator_pb2
from certs import keyfile


def region_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.operator.ListRegions, common_pb2.Empty())
    return [to_doc(r) for r in res.regions], lambda rows: table(rows, ["name", "display_name", "pair"])


def vault_create(c: Client, a: argparse.Namespace) -> Any:
    v = c.call(c.operator.CreateVault, operator_pb2.CreateVaultRequest(name=a.name, region=a.region))
    return to_doc(v), lambda d: show(d, ("created_at", "key_expires_at"))


def vault_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.operator.ListVaults, common_pb2.Empty())
    return [to_doc(v) for v in res.vaults], lambda rows: table(
        rows, ["name", "id", "region", "created_at"], times=("created_at",)
    )


def vault_show(c: Client, a: argparse.Namespace) -> Any:
    v = c.call(c.operator.GetVault, operator_pb2.VaultRef(vault=a.name))
    return to_doc(v), lambda d: show(d, ("created_at", "key_expires_at"))


def vault_delete(c: Client, a: argparse.Namespace) -> Any:
    """Refused (with what lives in the vault) unless it is empty; --force tears it down as a job."""
    ref = c.call(c.operator.DeleteVault, operator_pb2.DeleteVaultRequest(vault=a.name, force=a.force))
    if not ref.id:
        return {"deleted": a.name}, lambda d: print(f"deleted vault {a.name}")
    if a.wait:
        doc = wait_job(c, a, ref.id, gone_ok=True, vault=a.name)
        return doc, lambda d: print(f"deleted vault {a.name} (job {ref.id})")
    return {"job_id": ref.id, "vault": a.name}, lambda d: print(
        f"job {ref.id} started: tearing down vault {a.name}; follow it with 'asr job wait {ref.id} --vault {a.name}'")


def vault_key(c: Client, a: argparse.Namespace) -> Any:
    """Two phases, so that the vault always keeps a usable key: check --out, generate a
    *pending* key, write its file durably (0600), and only then activate it, which
    supersedes the older keys. A failure before activation leaves the older key valid and
    the file at --out untouched; after activation only the rename of the fsynced file
    within the directory checked at the start remains. An activation whose answer was lost
    (the cloud became unreachable) is retried (activating twice is harmless); if it stays
    unknown the file is kept, since the key may be the vault's only valid one."""
    if not 1 <= a.valid_days <= keyfile.MAX_VALID_DAYS:
        raise UsageError(f"--valid-days {a.valid_days} is out of range",
                         causes=(f"A registration key is valid for 1 to {keyfile.MAX_VALID_DAYS} days.",),
                         action=f"Pass --valid-days from 1 to {keyfile.MAX_VALID_DAYS} "
                                f"(default {keyfile.DEFAULT_VALID_DAYS}).")
    out = checked_target(a.out)
    res = c.call(c.operator.GenerateKey, operator_pb2.GenerateKeyRequest(vault=a.name, valid_days=a.valid_days))
    unconfirmed: Unreachable | None = None
    try:
        with durablefile.atomic_writer(out, durablefile.PRIVATE) as f:
            f.write(res.content)
            f.flush()
            os.fsync(f.fileno())  # durable before the key it holds replaces the older ones
            try:
                _activate(c, a.name, res.key_id)
            except Unreachable as err:
                unconfirmed = err
    except OSError as exc:
        raise write_failed(exc, out, "registration key file",
                           "The key was not activated: the vault's earlier key stays valid.") from exc
    except AsrError as err:
        err.details = (*err.details, f"The key was not activated and {out} was not written: "
                                     "the vault's earlier key stays valid.")
        raise
    if unconfirmed is not None:
        unconfirmed.details = (*unconfirmed.details, f"{out} was written, but its activation was not confirmed. "
                               "If registering with it says 'never activated', the vault's earlier key is still "
                               "valid; run 'asr vault key' again.")
        raise unconfirmed
    return {"key_file": out, "expires_at": iso_json(res.expires_at)}, lambda d: print(
        f"wrote {out} (valid until {iso(res.expires_at)}; earlier keys of the vault are now invalid)"
    )


def _activate(c: Client, vault: str, key_id: str, attempts: int = 3) -> None:
    for attempt in range(attempts):
        try:
            c.call(c.operator.ActivateKey, operator_pb2.ActivateKeyRequest(vault=vault, key_id=key_id), timeout=20)
            return
        except Unreachable:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)


def storage_create(c: Client, a: argparse.Namespace) -> Any:
    s = c.call(c.operator.CreateStorage, operator_pb2.CreateStorageRequest(
        vault=a.vault, name=a.name, region=a.region, redundancy=a.redundancy, backend=a.backend,
        blob_connection_string=a.blob_connection_string or "",
    ))
    return to_doc(s), show


def storage_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.operator.ListStorage, operator_pb2.VaultRef(vault=a.vault))
    return [to_doc(s) for s in res.accounts], lambda rows: table(
        rows, ["name", "region", "redundancy", "backend", "location"]
    )


def storage_rebuild_index(c: Client, a: argparse.Namespace) -> Any:
    """Rebuild a storage account's chunk index from the trailers of its packs."""
    from asrpb import replication_pb2, replication_pb2_grpc

    stub = replication_pb2_grpc.PointsStub(c.channel)
    res = c.call(stub.RebuildIndex, replication_pb2.RebuildIndexRequest(vault=a.vault, storage=a.name),
                 timeout=24 * 3600)
    doc = to_doc(res)
    doc.setdefault("damaged_packs", [])
    if res.damaged_packs:
        from asrerrors import DataCorrupt

        a.exit_code = DataCorrupt.exit_code

    def printer(d: dict[str, Any]) -> None:
        print(f"index of {a.name} rebuilt from {d.get('packs', 0)} packs: {d.get('blobs', 0)} entries")
        for name in d["damaged_packs"]:
            print(f"  damaged pack left out: {name}")

    return doc, printer


def storage_delete(c: Client, a: argparse.Namespace) -> Any:
    """Refused while a policy, a point or a recovered VM uses the account; destroys its data."""
    c.call(c.operator.DeleteStorage, operator_pb2.ResourceRef(vault=a.vault, name=a.name), timeout=3600)
    return {"deleted": a.name}, lambda d: print(f"deleted storage account {a.name} and its stored data")


def _subnet(value: str) -> operator_pb2.Subnet:
    name, sep, cidr = value.partition("=")
    if not sep:
        raise UsageError(f"--subnet {value!r} must be NAME=CIDR, e.g. default=10.0.1.0/24")
    return operator_pb2.Subnet(name=name, cidr=cidr)


def network_create(c: Client, a: argparse.Namespace) -> Any:
    n = c.call(c.operator.CreateNetwork, operator_pb2.CreateNetworkRequest(
        vault=a.vault, name=a.name, region=a.region, address_space=a.address_space,
        subnets=[_subnet(s) for s in a.subnet],
    ))
    return to_doc(n), show


def network_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.operator.ListNetworks, operator_pb2.VaultRef(vault=a.vault))
    return [to_doc(n) for n in res.networks], lambda rows: table(
        rows, ["name", "region", "address_space", "subnets"]
    )


def network_delete(c: Client, a: argparse.Namespace) -> Any:
    """Refused while a recovered VM is attached to the network."""
    c.call(c.operator.DeleteNetwork, operator_pb2.ResourceRef(vault=a.vault, name=a.name))
    return {"deleted": a.name}, lambda d: print(f"deleted network {a.name}")


def server_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.operator.ListServers, operator_pb2.VaultRef(vault=a.vault))
    return [to_doc(s) for s in res.servers], lambda rows: table(
        rows, ["role", "name", "state", "version", "last_heartbeat", "provider"],
        times=("last_heartbeat",),
    )


def server_remove(c: Client, a: argparse.Namespace) -> Any:
    """Revoke the server; its pending commands fail and its protected VMs become SourceMissing."""
    c.call(c.operator.RemoveServer, operator_pb2.RemoveServerRequest(vault=a.vault, role=a.role, name=a.name))
    return {"removed": a.name, "role": a.role}, lambda d: print(
        f"removed {a.role} {a.name}; its certificate is refused from now on"
    )


def add_parsers(sub: Any, vault_arg: Any) -> None:
    r = sub.add_parser("region", help="regions").add_subparsers(dest="sub", required=True, metavar="COMMAND")
    r.add_parser("list", help="the regions vaults can be created in").set_defaults(fn=region_list)

    v = sub.add_parser("vault", help="recovery services vaults").add_subparsers(dest="sub", required=True,
                                                                                 metavar="COMMAND")
    p = v.add_parser("create", help="create a vault (its own issuing CA)")
    p.add_argument("name", help="vault name (1-63 letters, digits, hyphens)")
    p.add_argument("--region", required=True, help="region of the vault (asr region list)")
    p.set_defaults(fn=vault_create)
    v.add_parser("list", help="every vault").set_defaults(fn=vault_list)
    p = v.add_parser("show", help="one vault")
    p.add_argument("name", help="vault name or id")
    p.set_defaults(fn=vault_show)
    p = v.add_parser("delete", help="delete an empty vault; --force tears a vault down as a job")
    p.add_argument("name", help="vault name or id")
    p.add_argument("--force", action="store_true",
                   help="disable protection of every VM, delete recovered VMs, revoke servers and delete all "
                        "stored data, in that order, as a job")
    add_wait_options(p)
    p.set_defaults(fn=vault_delete)
    p = v.add_parser("key", help="write a registration key file (0600)")
    p.add_argument("name", help="vault name or id")
    p.add_argument("--out", required=True, help="the key file to write (its directory must exist)")
    p.add_argument("--valid-days", type=int, default=keyfile.DEFAULT_VALID_DAYS,
                   help=f"1 to {keyfile.MAX_VALID_DAYS} (default {keyfile.DEFAULT_VALID_DAYS}); "
                        "earlier keys of the vault become invalid")
    p.set_defaults(fn=vault_key)

    s = sub.add_parser("storage", help="storage accounts").add_subparsers(dest="sub", required=True,
                                                                           metavar="COMMAND")
    p = s.add_parser("create", help="create a storage account for recovery points and recovered disks")
    p.add_argument("name", help="storage account name")
    vault_arg(p)
    p.add_argument("--region", required=True, help="region of the account (the vault's, for replication)")
    p.add_argument("--redundancy", default="GRS", choices=["GRS", "LRS"], help="replication needs GRS (default)")
    p.add_argument("--backend", default="local", choices=["local", "blob"],
                   help="local: a directory of the cloud service (default); blob: the Azure Blob API")
    p.add_argument("--blob-connection-string", help="connection string of the blob service (--backend blob)")
    p.set_defaults(fn=storage_create)
    p = s.add_parser("list", help="the vault's storage accounts")
    vault_arg(p)
    p.set_defaults(fn=storage_list)
    p = s.add_parser("delete", help="delete an unused storage account and its stored data")
    p.add_argument("name", help="storage account name")
    vault_arg(p)
    p.set_defaults(fn=storage_delete)
    p = s.add_parser("rebuild-index", help="rebuild the account's chunk index from its pack trailers")
    p.add_argument("name", help="storage account name")
    vault_arg(p)
    p.set_defaults(fn=storage_rebuild_index)

    n = sub.add_parser("network", help="virtual networks").add_subparsers(dest="sub", required=True,
                                                                           metavar="COMMAND")
    p = n.add_parser("create", help="create a network recovered VMs can be attached to")
    p.add_argument("name", help="network name")
    vault_arg(p)
    p.add_argument("--region", required=True, help="region of the network (the vault's, to be used)")
    p.add_argument("--address-space", required=True, help="CIDR, e.g. 10.10.0.0/16")
    p.add_argument("--subnet", action="append", default=[], help="NAME=CIDR inside the address space, repeatable")
    p.set_defaults(fn=network_create)
    p = n.add_parser("list", help="the vault's networks")
    vault_arg(p)
    p.set_defaults(fn=network_list)
    p = n.add_parser("delete", help="delete a network no recovered VM is attached to")
    p.add_argument("name", help="network name")
    vault_arg(p)
    p.set_defaults(fn=network_delete)

    sv = sub.add_parser("server", help="registered providers and agents").add_subparsers(dest="sub", required=True,
                                                                                        metavar="COMMAND")
    p = sv.add_parser("list", help="providers and agents: state, version, last heartbeat")
    vault_arg(p)
    p.set_defaults(fn=server_list)
    p = sv.add_parser("remove", help="revoke a provider's or agent's certificate")
    p.add_argument("name", help="the server's registered name")
    vault_arg(p)
    p.add_argument("--role", required=True, choices=["provider", "agent"], help="which kind of server")
    p.set_defaults(fn=server_remove)


__all__ = ["add_parsers"]
