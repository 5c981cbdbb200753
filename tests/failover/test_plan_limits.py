"""Issue 5: a recovery plan holds at most 100 VMs in at most seven groups; more is refused with
an error naming the limit (plan code directly, and once through asr)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from asrclock import FakeClock
from asrerrors import UsageError
from certs.pki import create_ca
from cloudsvc.failover.plans import MAX_GROUPS, MAX_VMS, Plans
from cloudsvc.schema import MIGRATIONS
from cloudsvc.vaults import Vaults
from metastore.database import Database
from tests.failover.fixture import VAULT
from tests.harness import Cloud


class _Inventory:
    """Every reference names a VM whose id is the reference itself."""

    def find_vm(self, vault_id: str, ref: str) -> dict[str, str]:
        return {"vm_id": ref}


def test_plan_limits_in_the_plan_code(tmp_path: Path) -> None:
    assert (MAX_VMS, MAX_GROUPS) == (100, 7)
    db = Database(str(tmp_path / "m.db"), MIGRATIONS)
    Vaults(db, create_ca("t"), FakeClock(), str(tmp_path)).create("v", "japaneast")
    vault_id = str(db.query("SELECT id FROM vaults")[0]["id"])
    plans = Plans(db, FakeClock(), cast(Any, _Inventory()))

    with pytest.raises(UsageError, match="at most 100 VMs \\(101 given\\)"):
        plans.create(vault_id, "big", [f"vm{i}" for i in range(101)])
    assert plans.names(vault_id) == []
    plans.create(vault_id, "full", [f"vm{i}" for i in range(60)])
    for g in range(1, 6):
        plans.add_group(vault_id, "full", [f"vm{g}-{i}" for i in range(8)])
    with pytest.raises(UsageError, match="at most 100 VMs \\(101 given\\)"):
        plans.add_group(vault_id, "full", [f"x{i}" for i in range(1)])
    plans.add_group(vault_id, "full", [])                                   # group 7, 100 VMs in all
    assert len(plans.groups(vault_id, "full")) == 7
    with pytest.raises(UsageError, match="at most 7 groups"):
        plans.add_group(vault_id, "full", [])
    groups = plans.groups(vault_id, "full")                                  # refused changes left nothing
    assert len(groups) == 7 and sum(len(g["vms"]) for g in groups) == 100


def test_plan_with_an_eighth_group_is_refused_by_asr(cloud: Cloud) -> None:
    cloud.asr("vault", "create", "contoso", "--region", "japaneast")
    cloud.asr("plan", "create", "app", *VAULT)
    for _ in range(6):
        cloud.asr("plan", "add-group", "app", *VAULT)
    res = cloud.asr("plan", "add-group", "app", *VAULT, check=False)
    assert res.returncode != 0 and "at most 7 groups" in res.stderr, res.stderr
    assert len(cloud.asr_json("plan", "show", "app", *VAULT)["groups"]) == 7
