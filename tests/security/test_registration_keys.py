"""Registration keys are never lost, and a key file is read field by field.

`asr vault key` used to supersede every earlier key first and write the file second: a
write that failed (a missing directory, a directory as --out, a full disk) left the vault
with no usable key, and a traceback. Now a generated key is *pending* (registration refuses
it, it replaces nothing); the CLI checks --out first, writes the file durably, and only then
activates the key, which supersedes the older ones.

The cloud and vaults here are the package's shared cloud service (conftest.py); each test
uses a vault of its own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from asrchannel.status import from_rpc_error
from asrchannel.tls import client_channel
from asrerrors import NotFound, Unreachable
from asrpb import operator_pb2, operator_pb2_grpc
from certs import keyfile
from certs.pki import create_ca
from cloudsvc.schema import MIGRATIONS
from metastore.database import Database
from tests.harness import BIN, Cloud, run
from tests.security.conftest import World


def key_rows(cloud: Cloud, vault: str) -> list[tuple[int, str]]:
    vault_id = cloud.asr_json("vault", "show", vault)["id"]
    return [(r[0], r[5]) for r in cloud.db_rows("vault_keys") if r[1] == vault_id]


def register(cloud: Cloud, key: Path, name: str, root: Path) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "asr-provider"), "register", "--key-file", str(key), "--name", name,
                "--state-dir", str(root / name), "--address", "127.0.0.1"], env=cloud.env())


def refused(res: subprocess.CompletedProcess[str], exit_code: int, *words: str) -> None:
    assert res.returncode == exit_code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)


def no_fsize(limit: int = 0) -> None:
    """preexec_fn: the child cannot grow any file (EFBIG): a failing write, even as root."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_failed_key_write_keeps_the_older_key(world: World, tmp_path: Path) -> None:
    cloud = world.cloud
    cloud.asr("vault", "create", "keys-kept", "--region", "japaneast")
    old = tmp_path / "old.key"
    cloud.asr("vault", "key", "keys-kept", "--out", str(old))
    assert (old.stat().st_mode & 0o777) == 0o600
    before = key_rows(cloud, "keys-kept")
    assert [s for _, s in before] == ["active"]
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    # checked before any key is made: a coded usage error naming the path, no new key row
    missing = tmp_path / "nonexistent" / "dir"
    for out, words in (
        (missing / "k.key", ("ASR-0002", str(missing), "does not exist")),
        (tmp_path, ("ASR-0002", str(tmp_path), "is a directory")),
        (a_file / "k.key", ("ASR-0002", str(a_file), "not a directory")),
    ):
        refused(cloud.asr("vault", "key", "keys-kept", "--out", str(out), check=False), 2, *words)
    for days in ("0", "-1", str(keyfile.MAX_VALID_DAYS + 1)):
        res = cloud.asr("vault", "key", "keys-kept", "--out", str(tmp_path / "d.key"), "--valid-days", days,
                        check=False)
        refused(res, 2, "ASR-0002", f"--valid-days {days} is out of range")
    assert key_rows(cloud, "keys-kept") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "old.key"]

    # the write itself fails after the key was generated: that key stays pending, unused
    target = tmp_path / "new.key"
    res = subprocess.run([str(BIN / "asr"), "vault", "key", "keys-kept", "--out", str(target)], env=cloud.env(),
                         capture_output=True, text=True, timeout=120, preexec_fn=no_fsize)
    refused(res, 60, "ASR-0060", str(target), "earlier key stays valid")
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "old.key"]
    rows = key_rows(cloud, "keys-kept")
    assert rows[:1] == before and [s for _, s in rows[1:]] == ["pending"], rows

    # the older key still registers a server
    res = register(cloud, old, "prov-a", tmp_path)
    assert res.returncode == 0, res.stderr

    # a successful run supersedes it
    cloud.asr("vault", "key", "keys-kept", "--out", str(target))
    assert (target.stat().st_mode & 0o777) == 0o600
    assert [s for _, s in key_rows(cloud, "keys-kept")] == ["superseded", "superseded", "active"]
    refused(register(cloud, old, "prov-b", tmp_path), 23, "ASR-0023", "superseded")
    res = register(cloud, target, "prov-b", tmp_path)
    assert res.returncode == 0, res.stderr


def test_a_pending_key_registers_nothing_until_activated(world: World, tmp_path: Path) -> None:
    cloud = world.cloud
    cloud.asr("vault", "create", "keys-pending", "--region", "japaneast")
    old = tmp_path / "old.key"
    cloud.asr("vault", "key", "keys-pending", "--out", str(old))
    op = json.loads(cloud.credentials.read_text())
    ch = client_channel(cloud.endpoint, op["service_ca_pem"].encode(), op["cert_pem"].encode(),
                        op["key_pem"].encode())
    stub = operator_pb2_grpc.OperatorStub(ch)

    def error(fn: object, req: object) -> str:
        try:
            fn(req, timeout=30)  # type: ignore[operator]
            return "ok"
        except grpc.RpcError as exc:
            return from_rpc_error(exc).code

    try:
        gen = stub.GenerateKey(operator_pb2.GenerateKeyRequest(vault="keys-pending", valid_days=2), timeout=30)
        assert gen.key_id and json.loads(gen.content)["expires_at"] == gen.expires_at
        pending = tmp_path / "pending.key"
        pending.write_bytes(gen.content)
        refused(register(cloud, pending, "prov-p", tmp_path), 23, "ASR-0023", "never activated")
        # generating replaced nothing: the older key still works
        assert register(cloud, old, "prov-o", tmp_path).returncode == 0
        vault = stub.ActivateKey(operator_pb2.ActivateKeyRequest(vault="keys-pending", key_id=gen.key_id),
                                 timeout=30)
        assert vault.key_expires_at == gen.expires_at
        assert error(stub.ActivateKey, operator_pb2.ActivateKeyRequest(vault="keys-pending",
                                                                       key_id=gen.key_id)) == "ok"  # retried
        assert register(cloud, pending, "prov-p", tmp_path).returncode == 0
        refused(register(cloud, old, "prov-x", tmp_path), 23, "ASR-0023", "superseded")
        # an older pending key cannot come back over a newer active one
        first = stub.GenerateKey(operator_pb2.GenerateKeyRequest(vault="keys-pending"), timeout=30)
        second = stub.GenerateKey(operator_pb2.GenerateKeyRequest(vault="keys-pending"), timeout=30)
        stub.ActivateKey(operator_pb2.ActivateKeyRequest(vault="keys-pending", key_id=second.key_id), timeout=30)
        assert error(stub.ActivateKey, operator_pb2.ActivateKeyRequest(
            vault="keys-pending", key_id=first.key_id)) == "ASR-0023"
        for key_id in ("", "999999", "x1"):
            assert error(stub.ActivateKey, operator_pb2.ActivateKeyRequest(
                vault="keys-pending", key_id=key_id)) == "ASR-0040"
        # another vault's key id is not this vault's key
        assert error(stub.ActivateKey, operator_pb2.ActivateKeyRequest(
            vault="fabrikam", key_id=second.key_id)) == "ASR-0040"
    finally:
        ch.close()


def test_the_key_table_migration_keeps_keys(tmp_path: Path) -> None:
    """Migration 5 recreates vault_keys to allow 'pending' (SQLite cannot alter a CHECK)."""
    path = str(tmp_path / "m.db")
    before = next(i for i, m in enumerate(MIGRATIONS) if "'pending'" in m)
    old = Database(path, MIGRATIONS[:before])
    with old.write() as conn:
        conn.execute("INSERT INTO vaults(id, name, region, created_at, ca_cert_pem, ca_key_pem)"
                     " VALUES ('v1', 'v', 'japaneast', 1, 'c', 'k')")
        for i, state in enumerate(("superseded", "active")):
            conn.execute("INSERT INTO vault_keys(vault_id, secret_hash, issued_at, expires_at, state)"
                         " VALUES ('v1', ?, 1, 2, ?)", (f"h{i}", state))
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO vault_keys(vault_id, secret_hash, issued_at, expires_at, state)"
                         " VALUES ('v1', 'hp', 1, 2, 'pending')")
    old.close()
    db = Database(path, MIGRATIONS)
    assert db.schema_version() == len(MIGRATIONS)
    rows = [tuple(r) for r in db.query("SELECT id, vault_id, secret_hash, state FROM vault_keys ORDER BY id")]
    assert rows == [(1, "v1", "h0", "superseded"), (2, "v1", "h1", "active")]
    with db.write() as conn:
        cur = conn.execute("INSERT INTO vault_keys(vault_id, secret_hash, issued_at, expires_at, state)"
                           " VALUES ('v1', 'h2', 1, 2, 'pending') RETURNING id")
        assert cur.fetchone()[0] == 3
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO vault_keys(vault_id, secret_hash, issued_at, expires_at, state)"
                         " VALUES ('v1', 'h3', 1, 2, 'bogus')")
    with db.write() as conn:  # the vault's keys still go with the vault
        conn.execute("DELETE FROM vaults WHERE id='v1'")
    assert db.query("SELECT * FROM vault_keys") == []
    db.close()


# ---- a key file sealed with a wrong field ---------------------------------------------------------
def sealed_key(tmp_path: Path, **change: object) -> Path:
    doc = json.loads(keyfile.RegistrationKey(
        vault_id="0123456789abcdef", vault_name="v", region="japaneast",
        endpoints={"api": "127.0.0.1:7443", "registration": "127.0.0.1:7444"},
        service_ca_pem=create_ca("s").cert_pem.decode(), vault_ca_pem=create_ca("v").cert_pem.decode(),
        secret=keyfile.new_secret(), issued_at=1.0, expires_at=4e9).to_bytes())
    for dotted, value in change.items():
        *outer, last = dotted.split("__")
        target = doc
        for part in outer:
            target = target[part]
        target[last] = value
    doc.pop("checksum")
    doc["checksum"] = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    path = tmp_path / "sealed.key"
    path.write_text(json.dumps(doc, indent=2))
    return path


@pytest.mark.parametrize("change,field", [
    ({"endpoints__registration": 7443}, "endpoints.registration"),
    ({"endpoints__api": None}, "endpoints.api"),
    ({"service_ca_pem": "garbage"}, "service_ca_pem"),
    ({"expires_at": "soon"}, "expires_at"),
])
def test_register_names_the_wrong_field(tmp_path: Path, change: dict[str, object], field: str) -> None:
    key = sealed_key(tmp_path, **change)
    provider = run([str(BIN / "asr-provider"), "register", "--key-file", str(key), "--name", "p1",
                    "--state-dir", str(tmp_path / "p1")])
    agent = run([str(BIN / "asr-agent"), "register", "--key-file", str(key), "--host", "hv01",
                 "--provider", "127.0.0.1:1", "--state-dir", str(tmp_path / "hv01")])
    for res in (provider, agent):
        refused(res, 21, "ASR-0021", f"field {field} ", str(key))
    assert not (tmp_path / "p1" / "registration.json").exists()
    assert not (tmp_path / "hv01" / "registration.json").exists()


# ---- the CLI's ordering, in-process: what an activation failure leaves behind ---------------------
class _Operator:
    def __init__(self, activation: list[Exception | None]) -> None:
        self.activation = activation
        self.attempts = 0

    def GenerateKey(self, req: Any, timeout: float | None = None) -> operator_pb2.KeyFile:  # noqa: N802
        return operator_pb2.KeyFile(content=b"the new key", expires_at=2e9, key_id="7")

    def ActivateKey(self, req: Any, timeout: float | None = None) -> operator_pb2.Vault:  # noqa: N802
        assert req.key_id == "7"
        self.attempts += 1
        err = self.activation.pop(0)
        if err is not None:
            raise err
        return operator_pb2.Vault()


def _vault_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, activation: list[Exception | None]) -> _Operator:
    from asrcli import foundation_cmds

    monkeypatch.setattr(foundation_cmds.time, "sleep", lambda s: None)
    op = _Operator(activation)
    client: Any = argparse.Namespace(operator=op, call=lambda fn, req, timeout=None: fn(req, timeout=timeout))
    foundation_cmds.vault_key(client, argparse.Namespace(name="v", out=str(tmp_path / "k.key"), valid_days=5))
    return op


def test_a_refused_activation_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "k.key").write_bytes(b"the old key")
    with pytest.raises(NotFound) as info:
        _vault_key(tmp_path, monkeypatch, [NotFound("no such key")])
    assert "earlier key stays valid" in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]
    assert (tmp_path / "k.key").read_bytes() == b"the old key"


def test_an_unconfirmed_activation_keeps_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer was lost three times: the key may be the vault's only valid one, so its file
    stays, and the error says what to do."""
    with pytest.raises(Unreachable) as info:
        _vault_key(tmp_path, monkeypatch, [Unreachable("gone")] * 3)
    assert "activation was not confirmed" in str(info.value)
    assert (tmp_path / "k.key").read_bytes() == b"the new key"
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]


def test_a_lost_answer_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    op = _vault_key(tmp_path, monkeypatch, [Unreachable("blip"), None])
    assert op.attempts == 2
    assert (tmp_path / "k.key").read_bytes() == b"the new key"
