"""Unit tests of cloudsvc.operators and cloudsvc.roles: one module each, a real SQLite store
and a fake clock (no daemon)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asrclock import FakeClock
from asrerrors import AlreadyExists, NotAuthenticated, PermissionDenied, SignInLimited, UsageError
from certs.pki import create_ca
from cloudsvc import roles
from cloudsvc.operators import FAILURE_WINDOW_S, SESSION_S, Operators
from cloudsvc.roles import Role
from cloudsvc.schema import MIGRATIONS
from metastore.database import Database


@pytest.fixture
def ops(tmp_path: Path) -> Operators:
    return Operators(Database(str(tmp_path / "m.db"), MIGRATIONS), FakeClock(), create_ca("test CA"), "h:1")


def test_password_is_hashed_and_signs_in(ops: Operators) -> None:
    c = ops.create("alice", "reader")
    assert c.role == Role.READER and len(c.password) >= 20
    row = ops.db.one("SELECT password_hash FROM operator_accounts WHERE name='alice'")
    assert row is not None and row["password_hash"].startswith("$argon2id$") and c.password not in row["password_hash"]
    token, session = ops.sign_in("alice", c.password)
    assert ops.session(token) == session and session.role == Role.READER
    assert ops.db.one("SELECT 1 FROM portal_sessions WHERE token_hash=?", (token,)) is None   # only its hash
    ops.clock.advance(SESSION_S)   # type: ignore[attr-defined]
    assert ops.session(token) is None


def test_create_refuses_bad_input(ops: Operators) -> None:
    with pytest.raises(UsageError, match="role 'admin' is unknown"):
        ops.create("bob", "admin")
    ops.create("bob", "Operator")
    with pytest.raises(AlreadyExists):
        ops.create("bob", "Reader")
    with pytest.raises(UsageError):
        ops.create("-bad-", "Reader")


def test_five_wrong_passwords_limit_the_name(ops: Operators) -> None:
    c = ops.create("carol", "Contributor")
    ops.create("dave", "Reader")
    for _ in range(5):
        with pytest.raises(NotAuthenticated):
            ops.sign_in("carol", "wrong")
    with pytest.raises(SignInLimited, match="refused for"):
        ops.sign_in("carol", c.password)
    with pytest.raises(NotAuthenticated):       # another name is not limited
        ops.sign_in("dave", "wrong")
    ops.clock.advance(FAILURE_WINDOW_S)   # type: ignore[attr-defined]
    token, _ = ops.sign_in("carol", c.password)
    assert ops.session(token) is not None


def test_roles_table() -> None:
    assert roles.allows(Role.READER, "/asr.v1.Protection/GetVm")
    assert not roles.allows(Role.READER, "/asr.v1.Failover/TestFailover")
    assert roles.allows(Role.OPERATOR, "/asr.v1.Failover/TestFailover")
    assert roles.allows(Role.OPERATOR, "/asr.v1.Failover/ResumeJob")
    assert not roles.allows(Role.OPERATOR, "/asr.v1.Failover/Migrate")
    assert not roles.allows(Role.OPERATOR, "/asr.v1.Operator/CreateOperator")
    assert roles.allows(Role.CONTRIBUTOR, "/asr.v1.Whatever/New")   # absent: Contributor only
    assert not roles.allows(Role.OPERATOR, "/asr.v1.Whatever/New")
    with pytest.raises(PermissionDenied, match=r"'bob' \(Reader\) may not call Commit") as info:
        roles.require(Role.READER, "bob", "/asr.v1.Failover/Commit")
    assert "needs the Operator role" in info.value.causes[0] and "Operator role" in info.value.action
