"""One cloud service and one site for every test of this package (set up once: a protected VM
with a recovery point takes real daemons and a replication cycle).

    vault contoso   provider prov1 (daemon, serves HostLink) and agent hv01 (daemon, hosts vm1,
                    protected, one recovery point); prov2, hv02 and gone registered here
                    (in-process, over the real Registration RPC); gone then removed
    vault fabrikam  provider provB and agent hvB (registered, no daemons)

The callers of the authorisation tests use prov2/hv02 rather than prov1/hv01, so that calls
with empty requests (an empty inventory sync, an empty host report) cannot disturb vm1. The
provider's configuration names hv02 and gone in a cloud that is not synced.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from asrclock import SystemClock
from certs.pki import cert_pem, create_ca, key_to_pem, new_key, sign_client
from registration.enrol import register
from tests.controlplane.sitefix import agent_vm, wait_vms
from tests.harness import Cloud, Procs, Site, run, wait_for
from tests.replication.fixture import later_start, qemu

CLOUDS = [
    {"name": "gold", "hosts": ["hv01"], "sync": True},
    {"name": "silver", "hosts": ["hv02", "gone"], "sync": False},
]


@dataclass(frozen=True)
class Caller:
    """One identity of the authorisation tests: a client certificate chain and key, or none."""

    label: str
    cert: bytes | None = None
    key: bytes | None = None


@dataclass
class World:
    root: Path
    cloud: Cloud
    site: Site
    service_ca: bytes
    contoso_id: str
    fabrikam_id: str
    vm_id: str
    point_id: str
    callers: dict[str, Caller] = field(default_factory=dict)

    def pems(self, name: str) -> tuple[bytes, bytes]:
        d = self.root / name
        return (d / "identity.pem").read_bytes(), (d / "identity.key").read_bytes()

    @property
    def provider_endpoint(self) -> str:
        return f"127.0.0.1:{self.site.provider_port}"


def _register(key: Path, role: str, name: str, state_dir: Path) -> None:
    register(key_file=str(key), role=role, name=name, state_dir=str(state_dir), clock=SystemClock(),
             provider="prov1" if role == "agent" else "")


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("security")
    procs = Procs(root)
    try:
        yield _build(root, procs)
    finally:
        procs.stop_all()


def _build(root: Path, procs: Procs) -> World:
    cloud = Cloud(procs, root / "cloud").start()
    for vault in ("contoso", "fabrikam"):
        cloud.asr("vault", "create", vault, "--region", "japaneast")
        cloud.asr("storage", "create", "store1", "--vault", vault, "--region", "japaneast")
    site = Site(cloud, root, "contoso")
    site.new_key()
    assert site.register_provider("prov1").returncode == 0
    assert site.register_agent("hv01").returncode == 0
    for role, name in (("provider", "prov2"), ("agent", "hv02"), ("agent", "gone")):
        _register(site.key, role, name, root / name)
    fabrikam_key = root / "fabrikam.key"
    cloud.asr("vault", "key", "fabrikam", "--out", str(fabrikam_key))
    for role, name in (("provider", "provB"), ("agent", "hvB")):
        _register(fabrikam_key, role, name, root / name)
    cloud.asr("server", "remove", "gone", "--vault", "contoso", "--role", "agent")
    contoso_id = json.loads(site.key.read_text())["vault_id"]
    fabrikam_id = json.loads(fabrikam_key.read_text())["vault_id"]

    # vm1 on hv01: a small disk with data, protected, with one recovery point
    site.agent_config("hv01")
    disks = root / "hv01" / "disks"
    disks.mkdir(parents=True)
    os_disk = disks / "vm1-os.vhdx"
    qemu("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", str(os_disk), "4M")
    qemu("qemu-io", "-f", "vhdx", "-c", "write -P 0xab 0 256k", "-c", "write -P 0x5c 3M 64k", str(os_disk))
    res = agent_vm(site, "hv01", "create", "vm1", "--os-disk", str(os_disk), "--os", "windows-server-2019", "--json")
    assert res.returncode == 0, res.stderr
    vm_id = json.loads(res.stdout)["vm_id"]
    site.start_provider(clouds=CLOUDS)
    site.start_agent("hv01")
    wait_vms(cloud, {"vm1"})
    assert cloud.asr_json("cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1",
                          "--copy-frequency", "30s", "--retention-hours", "2", "--start", later_start(),
                          "--wait")["state"] == "Succeeded"
    assert cloud.asr_json("vm", "protect", "vm1", "--vault", "contoso", "--wait")["state"] == "Succeeded"
    wait_for(lambda: (root / "hv01" / "replication" / f"{vm_id}.json").exists(), 30, what="replication settings")
    once = run([sys.executable, "-m", "agent.replication", "once", vm_id, "--config", str(root / "hv01.toml")],
               env=cloud.env(), timeout=300)
    assert once.returncode == 0, once.stderr + once.stdout
    points = cloud.asr_json("point", "list", "vm1", "--vault", "contoso")
    assert len(points) == 1, points

    service_ca = (cloud.data_dir / "pki" / "ca.pem").read_bytes()
    w = World(root, cloud, site, service_ca, contoso_id, fabrikam_id, vm_id, points[0]["point_id"])
    op = json.loads(cloud.credentials.read_text())
    # A certificate from a foreign CA carrying the right identity: hv02's own URI.
    foreign_ca = create_ca("mallory")
    fkey = new_key()
    fake = sign_client(foreign_ca, fkey.public_key(), "hv02", f"spiffe://asr/vault/{contoso_id}/agent/hv02")
    # operators with the lesser roles (cloudsvc.roles): their own credentials, issued by the service
    roles = {}
    for name, role in (("reader1", "Reader"), ("operator1", "Operator")):
        cloud.asr("operator", "create", name, "--role", role, "--credentials-out", str(root / f"{name}.json"))
        roles[role] = json.loads((root / f"{name}.json").read_text())
    w.callers = {
        "none": Caller("none"),
        "operator": Caller("operator", op["cert_pem"].encode(), op["key_pem"].encode()),
        "Reader operator": Caller("Reader operator", roles["Reader"]["cert_pem"].encode(),
                                  roles["Reader"]["key_pem"].encode()),
        "Operator operator": Caller("Operator operator", roles["Operator"]["cert_pem"].encode(),
                                    roles["Operator"]["key_pem"].encode()),
        "provider": Caller("provider", *w.pems("prov2")),
        "agent": Caller("agent", *w.pems("hv02")),
        "other-vault provider": Caller("other-vault provider", *w.pems("provB")),
        "other-vault agent": Caller("other-vault agent", *w.pems("hvB")),
        "removed agent": Caller("removed agent", *w.pems("gone")),
        "foreign CA": Caller("foreign CA", cert_pem(fake) + cert_pem(foreign_ca.cert), key_to_pem(fkey)),
    }
    return w
