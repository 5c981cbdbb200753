"""Issue 15: the maintenance lease is kept while the maintenance works, not only taken as a
round starts. A garbage collection over several stores (or of one big store) can outlast the
lease period; the holder renews the lease between the steps of the work, so another cloud
service process does not start maintaining meanwhile. The lease still expires one period after
the holder stops renewing (a process that dies), and a holder that stalled past its lease and
lost it stops its round at the next step. Regression: the lease was renewed only when a round
started, and a second process took maintenance over in the middle of a long collection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from asrclock import FakeClock
from certs.pki import create_ca
from cloudsvc.events import Events
from cloudsvc.leases import Leases
from cloudsvc.lifecycle import ProtectedItems
from cloudsvc.replication import MAINTENANCE_LEASE, MaintenanceLeaseLost, Replication
from cloudsvc.schema import MIGRATIONS
from cloudsvc.vaults import Vaults
from cloudsvc.vaultstore import VaultStore
from metastore.database import open_database
from tests import pgserver

PERIOD = 10.0
STORES = ("store1", "store2", "store3")


@dataclass
class Two:
    clock: FakeClock
    a: Replication      # process A: runs the maintenance round
    b: Leases           # process B: asks for the lease while A works
    collected: list[str]


@pytest.fixture
def two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Two]:
    clock = FakeClock()
    target = pgserver.server().new_database() if pgserver.wanted() else str(tmp_path / "metadata.db")
    db_a, db_b = open_database(target, MIGRATIONS), open_database(target, MIGRATIONS)
    vaults = Vaults(db_a, create_ca("test CA"), clock, str(tmp_path / "storage"))
    events = Events(db_a, clock)
    a = Replication(db_a, clock, vaults, ProtectedItems(db_a, clock, events), events, str(tmp_path))
    a.lease = Leases(db_a, clock, "a", PERIOD).acquire
    vault = vaults.create("contoso", "japaneast")
    for name in STORES:
        vaults.create_storage(vault.id, name, "japaneast", "GRS", "local", "")
    t = Two(clock, a, Leases(db_b, clock, "b", PERIOD), [])
    try:
        yield t
    finally:
        a.close()
        db_a.close()
        db_b.close()


def slow_collections(monkeypatch: pytest.MonkeyPatch, two: Two, seconds: float,
                     during: Callable[[], None]) -> None:
    """Each store's collection takes ``seconds`` of the clock; ``during`` runs in the middle of it."""
    gc = VaultStore.gc

    def slow(store: VaultStore, checkpoint: Callable[[], None] = lambda: None) -> object:
        two.clock.advance(seconds)
        during()
        two.collected.append(str(store.index))
        return gc(store, checkpoint)

    monkeypatch.setattr(VaultStore, "gc", slow)


def test_the_lease_is_renewed_through_a_maintenance_longer_than_it(two: Two, monkeypatch: pytest.MonkeyPatch) -> None:
    start = two.clock.now()
    b_got: list[bool] = []
    # three collections of 0.6 period each: the round lasts 1.8 lease periods
    slow_collections(monkeypatch, two, 0.6 * PERIOD, lambda: b_got.append(two.b.acquire(MAINTENANCE_LEASE)))
    assert two.a.maintenance_round()
    assert len(two.collected) == len(STORES)
    assert two.clock.now() - start >= 1.5 * PERIOD
    assert b_got == [False] * len(STORES)                # B never took maintenance over
    assert two.b.holder_of(MAINTENANCE_LEASE) == "a"     # and A still holds it after the round
    # A stops renewing (dies): the lease expires one period after its last renewal, then B takes it
    two.clock.advance(PERIOD)
    assert two.b.acquire(MAINTENANCE_LEASE) and two.b.holder_of(MAINTENANCE_LEASE) == "b"
    assert not two.a.maintenance_round()


def test_a_holder_that_stalled_past_its_lease_stops_at_the_next_step(two: Two,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    b_got: list[bool] = []
    # the first collection stalls past the lease: B takes it meanwhile; A must not go on
    slow_collections(monkeypatch, two, 1.1 * PERIOD, lambda: b_got.append(two.b.acquire(MAINTENANCE_LEASE)))
    with pytest.raises(MaintenanceLeaseLost):
        two.a.maintenance_round()
    assert b_got == [True] and len(two.collected) == 1
    assert two.b.holder_of(MAINTENANCE_LEASE) == "b"
