"""The Operator service: what `asr` calls. Only operator certificates reach it."""

from __future__ import annotations

import json
from typing import Any

from asrpb import common_pb2, operator_pb2, operator_pb2_grpc
from certs import keyfile
from cloudsvc.regions import REGIONS
from cloudsvc.service import CloudService
from cloudsvc.vaults import VaultRow
from metastore.database import Row


def vault_msg(v: VaultRow) -> operator_pb2.Vault:
    return operator_pb2.Vault(
        id=v.id, name=v.name, region=v.region, created_at=v.created_at, key_expires_at=v.key_expires_at
    )


def storage_msg(r: Row) -> operator_pb2.StorageAccount:
    return operator_pb2.StorageAccount(
        name=r["name"], region=r["region"], redundancy=r["redundancy"], backend=r["backend"],
        location=r["location"],
    )


def network_msg(r: Row) -> operator_pb2.Network:
    subnets = [operator_pb2.Subnet(name=s["name"], cidr=s["cidr"]) for s in json.loads(r["subnets"])]
    return operator_pb2.Network(
        name=r["name"], region=r["region"], address_space=r["address_space"], subnets=subnets
    )


class OperatorApi(operator_pb2_grpc.OperatorServicer):
    """Translates the Operator service to vaults, registrar and teardown."""

    def __init__(self, svc: CloudService) -> None:
        self.svc = svc

    def ListRegions(self, request: Any, context: Any) -> operator_pb2.RegionList:
        return operator_pb2.RegionList(
            regions=[operator_pb2.Region(name=r.name, display_name=r.display_name, pair=r.pair) for r in REGIONS]
        )

    def CreateVault(self, request: Any, context: Any) -> operator_pb2.Vault:
        return vault_msg(self.svc.vaults.create(request.name, request.region))

    def ListVaults(self, request: Any, context: Any) -> operator_pb2.VaultList:
        return operator_pb2.VaultList(vaults=[vault_msg(v) for v in self.svc.vaults.list_vaults()])

    def GetVault(self, request: Any, context: Any) -> operator_pb2.Vault:
        return vault_msg(self.svc.vaults.get(request.vault))

    def DeleteVault(self, request: Any, context: Any) -> operator_pb2.JobRef:
        v = self.svc.vaults.get(request.vault)
        return operator_pb2.JobRef(vault=v.name, id=self.svc.teardown.delete(v, request.force))

    def GenerateKey(self, request: Any, context: Any) -> operator_pb2.KeyFile:
        days = request.valid_days or keyfile.DEFAULT_VALID_DAYS
        key, key_id = self.svc.vaults.generate_key(request.vault, days, self.svc.endpoints())
        return operator_pb2.KeyFile(content=key.to_bytes(), expires_at=key.expires_at, key_id=key_id)

    def ActivateKey(self, request: Any, context: Any) -> operator_pb2.Vault:
        return vault_msg(self.svc.vaults.activate_key(request.vault, request.key_id))

    def CreateStorage(self, request: Any, context: Any) -> operator_pb2.StorageAccount:
        row = self.svc.vaults.create_storage(
            request.vault, request.name, request.region, request.redundancy, request.backend,
            request.blob_connection_string,
        )
        return storage_msg(row)

    def ListStorage(self, request: Any, context: Any) -> operator_pb2.StorageList:
        return operator_pb2.StorageList(accounts=[storage_msg(r) for r in self.svc.vaults.list_storage(request.vault)])

    def CreateNetwork(self, request: Any, context: Any) -> operator_pb2.Network:
        row = self.svc.vaults.create_network(
            request.vault, request.name, request.region, request.address_space,
            [(s.name, s.cidr) for s in request.subnets],
        )
        return network_msg(row)

    def DeleteStorage(self, request: Any, context: Any) -> common_pb2.Empty:
        self.svc.deletion.delete_storage(self.svc.vaults.get(request.vault), request.name)
        return common_pb2.Empty()

    def DeleteNetwork(self, request: Any, context: Any) -> common_pb2.Empty:
        self.svc.deletion.delete_network(self.svc.vaults.get(request.vault), request.name)
        return common_pb2.Empty()

    def ListNetworks(self, request: Any, context: Any) -> operator_pb2.NetworkList:
        return operator_pb2.NetworkList(networks=[network_msg(r) for r in self.svc.vaults.list_networks(request.vault)])

    def ListServers(self, request: Any, context: Any) -> operator_pb2.ServerList:
        v = self.svc.vaults.get(request.vault)
        out = []
        for r, state in self.svc.registrar.connection_states(v.id, self.svc.config.heartbeat_timeout_seconds):
            out.append(
                operator_pb2.Server(
                    role=r["role"], name=r["name"], version=r["version"], registered_at=r["registered_at"],
                    last_heartbeat=r["last_heartbeat"], state=state,
                    provider=r["provider"], encryption=bool(r["encryption"]), identity=r["identity"],
                )
            )
        return operator_pb2.ServerList(servers=out)

    def CreateOperator(self, request: Any, context: Any) -> operator_pb2.OperatorCreated:
        c = self.svc.operators.create(request.name, request.role)
        return operator_pb2.OperatorCreated(name=c.name, role=c.role.value, password=c.password,
                                            credential_json=self.svc.operators.credential_json(c),
                                            portal_url=self.svc.portal_url())

    def RemoveServer(self, request: Any, context: Any) -> common_pb2.Empty:
        v = self.svc.vaults.get(request.vault)
        self.svc.registrar.remove(v.id, request.role, request.name)
        return common_pb2.Empty()
