"""Issue 15: a cloud service keeps each vault store open, but another process may delete the
storage account (its store destroyed) and make one of the same name. The open copy is then
stale (an SQLite connection to an unlinked index file): ``Replication.store`` notices and
opens the new store, or says NotFound. Regression: the copy was used until a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from asrclock import FakeClock
from asrerrors import NotFound
from certs.pki import create_ca
from cloudsvc.events import Events
from cloudsvc.lifecycle import ProtectedItems
from cloudsvc.replication import Replication
from cloudsvc.schema import MIGRATIONS
from cloudsvc.vaults import Vaults
from metastore.database import Database, open_database
from tests import pgserver


def _process(tmp_path: Path, target: str, clock: FakeClock) -> tuple[Database, Vaults, Replication]:
    """What one cloud service process builds over the shared database and data directory."""
    db = open_database(target, MIGRATIONS)
    vaults = Vaults(db, create_ca("test CA"), clock, str(tmp_path / "storage"))
    events = Events(db, clock)
    return db, vaults, Replication(db, clock, vaults, ProtectedItems(db, clock, events), events, str(tmp_path))


def _delete(db: Database, vaults: Vaults, repl: Replication, vault_id: str) -> None:
    repl.store(vault_id, "store1")
    st = repl.drop_store(vault_id, "store1")
    assert st is not None
    st.destroy()
    with db.write() as conn:
        vaults.delete_storage_row(conn, vault_id, "store1")


def test_a_store_another_process_deleted_is_not_used(tmp_path: Path) -> None:
    clock = FakeClock()
    target = pgserver.server().new_database() if pgserver.wanted() else str(tmp_path / "metadata.db")
    db_a, vaults_a, repl_a = _process(tmp_path, target, clock)
    db_b, _, repl_b = _process(tmp_path, target, clock)
    try:
        vault = vaults_a.create("contoso", "japaneast")
        vaults_a.create_storage(vault.id, "store1", "japaneast", "GRS", "local", "")
        old = repl_b.store(vault.id, "store1")            # B has it open
        assert repl_b.store(vault.id, "store1") is old
        # A deletes the account (as ``deletion`` does), makes one of the same name and uses it
        # before B looks again: the index file exists again, but it is another store
        _delete(db_a, vaults_a, repl_a, vault.id)
        clock.advance(60)
        vaults_a.create_storage(vault.id, "store1", "japaneast", "GRS", "local", "")
        repl_a.store(vault.id, "store1")
        new = repl_b.store(vault.id, "store1")
        assert new is not old and new.db.points() == []
        assert new.db.exists()
        # and once the account is gone, B says so
        _delete(db_a, vaults_a, repl_a, vault.id)
        with pytest.raises(NotFound):
            repl_b.store(vault.id, "store1")
    finally:
        repl_a.close()
        repl_b.close()
        db_a.close()
        db_b.close()
