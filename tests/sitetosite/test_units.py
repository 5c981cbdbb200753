"""Site to site (issue 11), in process: pairing refusals, network mappings, placement (with a
property test), what a recovery host may report, and the billing scenario of paired VMs.
The same rules through the real daemons: test_site_to_site.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.replication.engine import Engine
from asrclock import FakeClock
from asrerrors import (
    AlreadyExists,
    NetworkNotMapped,
    NoRecoveryHost,
    NotFound,
    PairingRefused,
    PermissionDenied,
    StateConflict,
    Unreachable,
)
from asrpb import control_pb2, inventory_pb2, replication_pb2
from certs.identity import Identity
from certs.pki import create_ca
from cloudsvc.billing import Billing
from cloudsvc.events import MAPPING_CHANGED, REPLICA_HEALTH, EventFilter, Events
from cloudsvc.inventory import Inventory, dumps_policy
from cloudsvc.lifecycle import ItemState, Op, ProtectedItems
from cloudsvc.replicas import Replicas
from cloudsvc.replication import Replication
from cloudsvc.schema import MIGRATIONS
from cloudsvc.sitetosite import Mapping, SiteToSite
from cloudsvc.vaults import Vaults
from metastore.database import Database
from tests.agent.fakes import VAULT as AGENT_VAULT
from tests.agent.fakes import FakeReplication, make_host

VAULT = "v1"
GIB = 1 << 30


class World:
    def __init__(self, root: Path) -> None:
        self.clock = FakeClock(1_780_000_000.0)
        self.db = Database(str(root / "m.db"), MIGRATIONS)
        with self.db.write() as conn:
            conn.execute("INSERT INTO vaults(id, name, region, created_at, ca_cert_pem, ca_key_pem)"
                         " VALUES (?, 'contoso', 'japaneast', 0, '', '')", (VAULT,))
        self.events = Events(self.db, self.clock)
        self.items = ProtectedItems(self.db, self.clock, self.events)
        self.inventory = Inventory(self.db, self.clock, self.items, self.events)
        self.site = SiteToSite(self.db, self.clock, self.inventory, self.events)
        self.replicas = Replicas(self.db, self.clock, self.items, self.events)
        self.items.on_removed.append(self.replicas.forget_vm)

    def sync(self, provider: str, *clouds: inventory_pb2.VmmCloud) -> None:
        self.inventory.apply_sync(VAULT, provider, control_pb2.InventorySync(clouds=list(clouds)))

    def pair(self, cloud: str, target: str) -> None:
        policy = inventory_pb2.Policy(target_cloud=target, copy_frequency_seconds=300, retention_hours=24,
                                      start="now", cloud=cloud)
        with self.db.write() as conn:
            conn.execute("INSERT OR REPLACE INTO policies(vault_id, cloud, policy, created_at) VALUES (?,?,?,0)",
                         (VAULT, cloud, dumps_policy(policy)))


def host(name: str, free: int = 0, address: str = "") -> inventory_pb2.Host:
    return inventory_pb2.Host(name=name, connected=True, replica_address=address, replica_free_bytes=free)


@pytest.fixture
def w(tmp_path: Path) -> World:
    world = World(tmp_path)
    world.sync("prov-a", inventory_pb2.VmmCloud(name="gold", networks=["corp", "dmz"], hosts=[host("hv01")]),
               inventory_pb2.VmmCloud(name="bronze", hosts=[host("hv02", 100 * GIB, "10.0.0.2:7600")]))
    world.sync("prov-b", inventory_pb2.VmmCloud(name="silver", networks=["corp-dr"],
                                                hosts=[host("hv11", 50 * GIB, "10.0.1.11:7600"),
                                                       host("hv12", 80 * GIB, "10.0.1.12:7600"),
                                                       host("hv13")]),
               inventory_pb2.VmmCloud(name="tin", hosts=[host("hv14")]))
    return world


def test_inventory_keeps_networks_and_replica_hosts(w: World) -> None:
    clouds = {c["name"]: c for c in w.inventory.clouds(VAULT)}
    assert clouds["gold"]["networks"] == ["corp", "dmz"] and clouds["bronze"]["networks"] == []
    hosts = {h["name"]: (h["replica_address"], h["replica_free_bytes"]) for h in w.inventory.hosts(VAULT, "silver")}
    assert hosts == {"hv11": ("10.0.1.11:7600", 50 * GIB), "hv12": ("10.0.1.12:7600", 80 * GIB), "hv13": ("", 0)}


def test_pairing_refusals_name_the_reason(w: World) -> None:
    gold = w.inventory.cloud(VAULT, "gold")
    with pytest.raises(PairingRefused, match="cannot be paired with itself"):
        w.site.check_pairing(VAULT, gold, "gold")
    with pytest.raises(PairingRefused, match="both served by provider 'prov-a'"):
        w.site.check_pairing(VAULT, gold, "bronze")
    with pytest.raises(NotFound, match="target cloud 'nowhere' is not synced"):
        w.site.check_pairing(VAULT, gold, "nowhere")
    with pytest.raises(PairingRefused, match=r"no host of target cloud 'tin' holds replicas \(hosts: hv14\)"):
        w.site.check_pairing(VAULT, gold, "tin")
    assert w.site.check_pairing(VAULT, gold, "silver")["provider"] == "prov-b"


def test_mappings_need_synced_networks_and_paired_clouds(w: World) -> None:
    m = Mapping("gold", "corp", "silver", "corp-dr", 0.0)
    with pytest.raises(PairingRefused, match="not paired with any cloud"):
        w.site.create_mapping(VAULT, m)
    w.pair("gold", "silver")
    with pytest.raises(NotFound, match=r"network 'lab' is not a VM network of cloud 'gold' \(its networks: corp, "
                                       r"dmz\)"):
        w.site.create_mapping(VAULT, Mapping("gold", "lab", "silver", "corp-dr", 0.0))
    with pytest.raises(NotFound, match="network 'corp' is not a VM network of cloud 'silver'"):
        w.site.create_mapping(VAULT, Mapping("gold", "corp", "silver", "corp", 0.0))
    assert w.site.create_mapping(VAULT, m).created_at == w.clock.now()
    with pytest.raises(AlreadyExists, match="already mapped to 'corp-dr' of cloud 'silver'"):
        w.site.create_mapping(VAULT, m)
    assert [(x.primary_network, x.recovery_network) for x in w.site.mappings(VAULT)] == [("corp", "corp-dr")]
    w.site.check_mapped(VAULT, "web01", "gold", "silver", ["corp", ""])   # a NIC without a network needs none
    with pytest.raises(NetworkNotMapped, match="connects to network 'dmz' of cloud 'gold'"):
        w.site.check_mapped(VAULT, "web01", "gold", "silver", ["corp", "dmz"])
    w.site.delete_mapping(VAULT, "gold", "corp")
    with pytest.raises(NotFound):
        w.site.delete_mapping(VAULT, "gold", "corp")
    codes = [e.code for e in w.events.list(VAULT)]
    assert codes.count(MAPPING_CHANGED) == 2


def test_placement_most_free_or_named_host(w: World) -> None:
    assert w.site.place(VAULT, "silver", "web01", 10 * GIB)["name"] == "hv12"
    assert w.site.place(VAULT, "silver", "web01", 10 * GIB, "hv11")["name"] == "hv11"
    with pytest.raises(NoRecoveryHost, match=r"needs 90.00 GiB \(96636764160 bytes\); the most free is 80.00 GiB "
                                             r"\(85899345920 bytes\) on hv12"):
        w.site.place(VAULT, "silver", "web01", 90 * GIB)
    with pytest.raises(NoRecoveryHost, match="host 'hv13' of cloud 'silver' holds no replicas"):
        w.site.place(VAULT, "silver", "web01", 1, "hv13")
    with pytest.raises(NoRecoveryHost, match="host 'hv01' is not in recovery cloud 'silver'"):
        w.site.place(VAULT, "silver", "web01", 1, "hv01")
    with pytest.raises(NoRecoveryHost, match="recovery host 'hv11' has 50.00 GiB free"):
        w.site.place(VAULT, "silver", "web01", 60 * GIB, "hv11")


# each example opens a database: on a loaded 2-core machine one can take longer than 200 ms
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frees=st.lists(st.integers(0, 1 << 40), min_size=1, max_size=6), needed=st.integers(0, 1 << 40))
def test_placement_picks_the_most_free_host_that_fits(tmp_path_factory: pytest.TempPathFactory, frees: list[int],
                                                      needed: int) -> None:
    world = World(tmp_path_factory.mktemp("p"))
    world.sync("p", inventory_pb2.VmmCloud(name="c", hosts=[host(f"h{i}", f, f"10.0.0.{i}:1")
                                                             for i, f in enumerate(frees)]))
    best = max(frees)
    if best < needed:
        with pytest.raises(NoRecoveryHost):
            world.site.place(VAULT, "c", "vm", needed)
        return
    chosen = world.site.place(VAULT, "c", "vm", needed)
    assert chosen["replica_free_bytes"] == best and chosen["name"] == f"h{frees.index(best)}"


def _paired_item(w: World) -> None:
    with w.db.write() as conn:
        w.items.create(conn, VAULT, vm_id="vm1", name="web01", cloud="gold", provider="prov-a", policy_json="{}",
                       job_id="j1", recovery_cloud="silver", recovery_host="hv12", pairing_id="pair1")
        w.replicas.pair(conn, VAULT, "vm1", "pair1", "hv12")


def _report(pairing: str = "pair1", health: str = "Normal", n: int = 2,
            at: float = 1_780_000_000.0) -> replication_pb2.ReplicaReport:
    """A report of ``n`` points, the newest 300 s before ``at`` when the last was received."""
    return replication_pb2.ReplicaReport(
        vm_id="vm1", pairing_id=pairing, health=health, free_bytes=7 * GIB, last_received_at=at,
        message="" if health == "Normal" else "replica directory nearly full",
        points=[replication_pb2.ReplicaPoint(point_id=f"p{i}", created_at=at - 300 * (n - i),
                                             stored_bytes=1000 * i, epoch=1) for i in range(n)])


def test_only_the_recovery_host_of_the_pairing_reports(w: World) -> None:
    _paired_item(w)
    me = Identity("agent", "hv12", VAULT)
    assert w.replicas.report(me, _report()) is True
    assert [p.point_id for p in w.replicas.points(VAULT, "vm1")] == ["p0", "p1"]
    with pytest.raises(PermissionDenied, match="agent hv11 is not the recovery host of VM web01"):
        w.replicas.report(Identity("agent", "hv11", VAULT), _report())
    with pytest.raises(NotFound, match="VM vm1 has no pairing 'forged'"):   # never made: a stranger learns nothing
        w.replicas.report(me, _report(pairing="forged"))
    with pytest.raises(NotFound):
        w.replicas.report(Identity("agent", "hv12", "other-vault"), _report())
    assert w.replicas.report(me, _report(health="Warning", n=3)) is True   # replaces the points
    assert [p.point_id for p in w.replicas.points(VAULT, "vm1")] == ["p0", "p1", "p2"]
    events = w.events.list(VAULT, EventFilter(vm_id="vm1"))
    assert events[0].code == REPLICA_HEALTH and "Normal -> Warning: replica directory nearly full" in events[0].message
    item = w.items.get(VAULT, "vm1")
    assert item is not None
    assert w.replicas.rpo(item, w.clock.now()) == 300.0
    with w.db.write() as conn:   # protection disabled: the pairing is gone, its host is told so
        w.items.end(conn, VAULT, "vm1", "j1", True)
        w.items.begin(conn, VAULT, "vm1", Op.UNPROTECT, "j2")
        w.items.end(conn, VAULT, "vm1", "j2", True)
    assert w.replicas.points(VAULT, "vm1") == [] and w.replicas.status(VAULT, "vm1") is None
    assert w.replicas.report(me, _report()) is False
    with pytest.raises(PermissionDenied):
        w.replicas.report(Identity("agent", "hv11", VAULT), _report())
    w.clock.advance(31 * 86400)   # released pairings are forgotten in time
    with w.db.write() as conn:
        w.replicas.forget_vm(conn, VAULT, "vm-other")
    with pytest.raises(NotFound):
        w.replicas.report(me, _report())


def test_site_to_site_vms_are_billed_on_premises_to_on_premises(w: World) -> None:
    month_start = 1_793_491_200.0   # 2026-11-01T00:00:00Z
    with w.db.write() as conn:
        for job, vm, scenario in (("j1", "vm1", "onprem-to-onprem"), ("j2", "vm2", "onprem-to-cloud"),
                                  ("j3", "vm3", "")):
            ctx = {"vm_id": vm, **({"scenario": scenario} if scenario else {})}
            conn.execute("INSERT INTO jobs(id, vault_id, kind, target, state, created_at, started_at, ended_at,"
                         " context) VALUES (?,?, 'EnableProtection', ?, 'Succeeded', ?, ?, ?, ?)",
                         (job, VAULT, vm, month_start, month_start, month_start, json.dumps(ctx)))
    w.clock.set(month_start + 30 * 86400)
    billing = Billing(w.db, w.clock)
    h2h = billing.report(VAULT, "2026-11", "onprem-to-onprem")
    assert [u.vm_id for u, _ in h2h.lines] == ["vm1"]
    to_cloud = billing.report(VAULT, "2026-11", "onprem-to-cloud")
    assert [u.vm_id for u, _ in to_cloud.lines] == ["vm2", "vm3"]
    assert h2h.unit_price < to_cloud.unit_price


def test_agent_replica_keys_resolve_like_every_path(tmp_path: Path) -> None:
    from agent.config import load

    f = tmp_path / "agent.toml"
    f.write_text('state_dir = "state"\nvm_dir = "vms"\n')
    cfg = load(str(f))
    assert (cfg.replica_listen, cfg.replica_path) == ("", str(tmp_path / "state" / "replicas"))
    f.write_text('state_dir = "state"\nvm_dir = "vms"\nreplica_listen = "10.0.0.11:7600"\nreplica_dir = "rep"\n')
    cfg = load(str(f))
    assert (cfg.replica_listen, cfg.replica_path) == ("10.0.0.11:7600", str(tmp_path / "rep"))


def _protected_on(w: World, host_name: str, size: int, network: str = "corp") -> None:
    """VM web01 of gold (disks of ``size`` bytes, NIC on ``network``) protected to ``host_name``."""
    vm = inventory_pb2.Vm(vm_id="vm1", name="web01", generation=1, cpus=2, memory_mb=2048, guest_os="windows",
                          disks=[inventory_pb2.Disk(format="vhdx", virtual_size=size, os_disk=True)],
                          nics=[inventory_pb2.Nic(mode="dhcp", network=network)])
    hv01 = host("hv01")
    hv01.vms.append(vm)
    w.sync("prov-a", inventory_pb2.VmmCloud(name="gold", networks=["corp", "dmz"], hosts=[hv01]),
           inventory_pb2.VmmCloud(name="bronze", hosts=[host("hv02", 100 * GIB, "10.0.0.2:7600")]))
    with w.db.write() as conn:
        w.items.create(conn, VAULT, vm_id="vm1", name="web01", cloud="gold", provider="prov-a", policy_json="{}",
                       job_id="j1", recovery_cloud="silver", recovery_host=host_name, pairing_id="pair1")


def test_placement_counts_the_space_of_replicas_placed_since_the_report(w: World) -> None:
    """hv12 reported 80 GiB free, then a 60 GiB VM was placed on it: until its replica fills,
    hv12 has 20 GiB for another VM, and a 30 GiB VM goes to hv11 (50 GiB). Placement used to
    count the reported free space only, putting both on hv12."""
    _protected_on(w, "hv12", 60 * GIB)
    assert w.site.reserved(VAULT, "hv12") == 60 * GIB
    assert w.site.place(VAULT, "silver", "app01", 30 * GIB)["name"] == "hv11"
    with pytest.raises(NoRecoveryHost, match="hv12: 85899345920 bytes free, 64424509440 reserved"):
        w.site.place(VAULT, "silver", "big01", 60 * GIB)
    # what the recovery host reports storing is no longer reserved
    with w.db.write() as conn:
        w.replicas.pair(conn, VAULT, "vm1", "pair1", "hv12")
    w.replicas.report(Identity("agent", "hv12", VAULT), replication_pb2.ReplicaReport(
        vm_id="vm1", pairing_id="pair1", health="Normal", free_bytes=50 * GIB, last_received_at=w.clock.now(),
        points=[replication_pb2.ReplicaPoint(point_id="p1", created_at=w.clock.now(), stored_bytes=40 * GIB,
                                             epoch=1)]))
    assert w.site.reserved(VAULT, "hv12") == 20 * GIB


def test_a_mapping_protected_vms_use_cannot_be_deleted(w: World) -> None:
    w.pair("gold", "silver")
    w.site.create_mapping(VAULT, Mapping("gold", "corp", "silver", "corp-dr", 0))
    _protected_on(w, "hv12", GIB, network="corp")
    with pytest.raises(StateConflict, match=r"network 'corp' of cloud 'gold' is used by 1 protected VM\(s\): web01"):
        w.site.delete_mapping(VAULT, "gold", "corp")
    with w.db.write() as conn:
        w.items.remove_all(conn, VAULT, "test")
    w.site.delete_mapping(VAULT, "gold", "corp")
    assert w.site.mappings(VAULT) == []


def test_site_health_names_what_the_primary_reported(w: World, tmp_path: Path) -> None:
    """The hosts cannot reach each other: the recovery host's report only says its newest point
    grows old; the cause is the primary's error, which the VM's health shows by the rule of a
    VM replicating to the vault (Warning before the first point, listed beside a late RPO), as
    it shows the primary's warning. Regression: both were dropped."""
    _paired_item(w)
    with w.db.write() as conn:   # web01 runs on hv01 (what a sync of prov-a records)
        conn.execute("INSERT INTO vms(vault_id, vm_id, name, host, cloud, provider, spec, updated_at)"
                     " VALUES (?, 'vm1', 'web01', 'hv01', 'gold', 'prov-a', '{}', 0)", (VAULT,))
    repl = Replication(w.db, w.clock, Vaults(w.db, create_ca("test CA"), w.clock, str(tmp_path)), w.items, w.events,
                       str(tmp_path))
    repl.site_health, repl.site_rpo = w.replicas.health, w.replicas.rpo
    item = w.items.get(VAULT, "vm1")
    assert item is not None
    hv01 = Identity("agent", "hv01", VAULT)
    unreachable = "ASR-0050: the recovery host hv12 at 10.0.1.12:7600 is unreachable: connection timed out"

    def health() -> tuple[str, list[str]]:
        row = w.db.one("SELECT * FROM replication_status WHERE vault_id=? AND vm_id=?", (VAULT, "vm1"))
        h = repl.health(item, row, w.clock.now())
        return h.state, h.errors

    repl.report(hv01, "vm1", item.epoch, 0.0, unreachable)          # the initial copy cannot start
    assert health() == ("Warning", [f"Initial replication is failing: {unreachable}"])
    assert w.replicas.report(Identity("agent", "hv12", VAULT), _report()) is True   # newest point 300 s old
    repl.report(hv01, "vm1", item.epoch, 1.0, "")
    assert health() == ("Normal", [])
    repl.report(hv01, "vm1", item.epoch, 0.0, unreachable)          # partitioned: cycles fail
    w.clock.advance(400)                                             # the newest point is 700 s old
    assert health() == ("Warning", ["The latest recovery point is 700s old (copy frequency 300s).",
                                    f"Last error: {unreachable}"])
    w.clock.advance(1500)                                            # older than 6F + 300 s
    assert health() == ("Critical", ["The latest recovery point is 2200s old (copy frequency 300s).",
                                     f"Last error: {unreachable}"])
    repl.report(hv01, "vm1", item.epoch, 1.0, "")                    # healed: a cycle succeeded
    assert w.replicas.report(Identity("agent", "hv12", VAULT), _report(n=3, at=w.clock.now())) is True
    assert health() == ("Normal", [])
    repl.report(hv01, "vm1", item.epoch, 1.0, "", warning="the quiesce hook failed", warning_code="ASR-0045")
    assert health() == ("Warning", ["ASR-0045: the quiesce hook failed"])


def test_site_to_site_cycles_clear_their_error_in_the_vault(tmp_path: Path) -> None:
    """A failed cycle reports its error to the vault; a site-to-site VM's next good point is
    recorded on its recovery host, not in the vault (which would clear the error), so the cycle
    reports that it succeeded. Regression: the error stayed in the VM's health for good."""
    h = make_host(tmp_path)
    vm_id = h.add_vm("web01")
    rs = h.settings.get(vm_id)
    assert rs is not None
    target = control_pb2.ReplicaTarget(recovery_host="hv11", address="10.0.1.11:7600", pairing_id="pair1")
    h.settings.enable(control_pb2.EnableReplication(vm_id=vm_id, vm_name="web01", vault_id=AGENT_VAULT,
                                                    policy=rs.policy, replica_target=target), h.clock.now())
    peer = FakeReplication()            # the recovery host; h.rpc is the vault
    channels = SimpleNamespace(rpc=lambda host, address, pairing: peer, close=lambda: None)
    engine = Engine(h.hv, h.settings, None, "fake", AGENT_VAULT, h.clock, str(h.root / "state"), workers=1, rpc=h.rpc,
                    replica_channels=channels)  # type: ignore[arg-type]
    try:
        engine.replicate(vm_id)
        peer.fail["BeginCycle"] = Unreachable("the recovery host hv11 at 10.0.1.11:7600 is unreachable")
        with pytest.raises(Unreachable):
            engine.replicate(vm_id)
        assert h.rpc.requests("ReportProgress")[-1].error.startswith("ASR-0050: the recovery host hv11")
        del peer.fail["BeginCycle"]
        h.hv.write("web01", 0, 0, b"\x22" * 65536)
        engine.replicate(vm_id)
        assert h.rpc.requests("ReportProgress")[-1].error == ""
        assert [m for m in h.rpc.methods() if m not in ("ReportProgress",)] == []   # no data went to the vault
        assert len(peer.points) == 2
    finally:
        engine.stop()


def test_only_the_primary_host_reports_reverse_syncs_and_only_while_re_protected(w: World) -> None:
    """ReportReverse (re-protect): the VM's own host, for the current pairing, in
    ReprotectInProgress or ReverseProtected; the VM's health then follows those syncs."""
    _protected_on(w, "hv12", GIB)
    with w.db.write() as conn:
        w.replicas.pair(conn, VAULT, "vm1", "pair1", "hv12")
    hv01 = Identity("agent", "hv01", VAULT)
    sync = replication_pb2.ReverseReport(vm_id="vm1", pairing_id="pair1", synced_at=w.clock.now(), blocks=3)
    assert w.replicas.report_reverse(hv01, sync) is False          # Enabling: not re-protected
    with w.db.write() as conn:                                      # failed over, committed, re-protect running
        w.items.end(conn, VAULT, "vm1", "j1", True)
        for op, job in ((Op.UNPLANNED_FAILOVER, "j2"), (Op.COMMIT, "j3"), (Op.REPROTECT, "j4")):
            w.items.begin(conn, VAULT, "vm1", op, job)
            if op != Op.REPROTECT:
                w.items.end(conn, VAULT, "vm1", job, True)
    with pytest.raises(PermissionDenied, match="agent hv12 is not the primary host of VM web01"):
        w.replicas.report_reverse(Identity("agent", "hv12", VAULT), sync)
    with pytest.raises(NotFound, match="VM vm1 has no pairing 'forged'"):   # never made: a stranger learns nothing
        w.replicas.report_reverse(hv01, replication_pb2.ReverseReport(vm_id="vm1", pairing_id="forged"))
    assert w.replicas.report_reverse(hv01, sync) is True
    with w.db.write() as conn:
        w.items.end(conn, VAULT, "vm1", "j4", True)
    item = w.items.get(VAULT, "vm1")
    assert item is not None and item.state == ItemState.REVERSE_PROTECTED
    assert w.replicas.reverse_health(item, w.clock.now()).state == "Normal"
    w.clock.advance(3 * 300 + 120)                                  # no sync for three intervals
    h = w.replicas.reverse_health(item, w.clock.now())
    assert h.state != "Normal" and "Re-protect: the copy on the primary host was last synced" in h.errors[0], h
    failing = replication_pb2.ReverseReport(vm_id="vm1", pairing_id="pair1", synced_at=sync.synced_at,
                                            error="ASR-0050: the recovery host hv12 is unreachable")
    assert w.replicas.report_reverse(hv01, failing) is True
    events = w.events.list(VAULT, EventFilter(vm_id="vm1"))
    assert "reverse sync on hv01 failing: ASR-0050" in events[0].message
