"""asr network-mapping commands (site to site, issue 11): which VM network of a paired
recovery cloud each network of a primary cloud fails over to."""

from __future__ import annotations

import argparse
from typing import Any

from asrcli.client import Client
from asrcli.output import table, to_doc
from asrpb import operator_pb2


def mapping_create(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.protection.CreateNetworkMapping, operator_pb2.NetworkMapping(
        vault=a.vault, primary_cloud=a.primary_cloud, primary_network=a.primary_network,
        recovery_cloud=a.recovery_cloud, recovery_network=a.recovery_network))
    return to_doc(res), lambda d: print(f"mapped network {d['primary_cloud']}/{d['primary_network']} to "
                                        f"{d['recovery_cloud']}/{d['recovery_network']}")


def mapping_list(c: Client, a: argparse.Namespace) -> Any:
    res = c.call(c.protection.ListNetworkMappings, operator_pb2.VaultRef(vault=a.vault))
    return [to_doc(m) for m in res.mappings], lambda rows: table(
        rows, ["primary_cloud", "primary_network", "recovery_cloud", "recovery_network", "created_at"],
        times=("created_at",))


def mapping_delete(c: Client, a: argparse.Namespace) -> Any:
    c.call(c.protection.DeleteNetworkMapping, operator_pb2.NetworkMappingRef(
        vault=a.vault, primary_cloud=a.primary_cloud, primary_network=a.primary_network))
    name = f"{a.primary_cloud}/{a.primary_network}"
    return {"deleted": name}, lambda d: print(f"deleted the mapping of network {name}")


def add_parsers(sub: Any, vault_arg: Any) -> None:
    nm = sub.add_parser("network-mapping", help="site to site: map a primary cloud's VM networks to a recovery "
                                                "cloud's").add_subparsers(dest="sub", required=True,
                                                                          metavar="COMMAND")
    p = nm.add_parser("create", help="map a network of a cloud to a network of the cloud it is paired with")
    vault_arg(p)
    p.add_argument("--primary-cloud", required=True, help="the protected VMM cloud")
    p.add_argument("--primary-network", required=True, help="a VM network of the primary cloud")
    p.add_argument("--recovery-cloud", required=True, help="the cloud the primary cloud is paired with")
    p.add_argument("--recovery-network", required=True, help="a VM network of the recovery cloud")
    p.set_defaults(fn=mapping_create)
    p = nm.add_parser("list", help="the vault's network mappings")
    vault_arg(p)
    p.set_defaults(fn=mapping_list)
    p = nm.add_parser("delete", help="delete the mapping of a primary cloud's network")
    vault_arg(p)
    p.add_argument("--primary-cloud", required=True, help="the protected VMM cloud")
    p.add_argument("--primary-network", required=True, help="its mapped VM network")
    p.set_defaults(fn=mapping_delete)
