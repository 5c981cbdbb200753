"""Issue 2, must-show 1 and 2: the registration story across processes, and every refusal."""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path

import grpc
import pytest

from asrchannel.status import from_rpc_error
from asrchannel.tls import client_channel
from asrclock import from_iso
from asrerrors import CertificateRevoked, NotAuthenticated, PermissionDenied, Unreachable
from asrpb import common_pb2, operator_pb2_grpc, site_pb2, site_pb2_grpc
from certs import keyfile
from certs.pki import cert_pem, create_ca, new_key, sign_client
from tests.harness import BIN, Cloud, Site, run, wait_for


@pytest.fixture
def site(cloud: Cloud, tmp_path: Path) -> Site:
    cloud.asr("vault", "create", "contoso", "--region", "japaneast")
    s = Site(cloud, tmp_path, "contoso")
    s.new_key()
    return s


def store_snapshot(cloud: Cloud) -> tuple[object, ...]:
    return tuple(cloud.db_rows(t) for t in ("vaults", "vault_keys", "servers", "revoked"))


def test_registration_story(cloud: Cloud, site: Site) -> None:
    assert site.key.stat().st_mode & 0o777 == 0o600
    doc = json.loads(site.key.read_text())
    for field in ("vault_id", "vault_name", "region", "endpoints", "service_ca_pem", "vault_ca_pem",
                  "secret", "expires_at", "version"):
        assert field in doc
    res = site.register_provider()
    assert res.returncode == 0, res.stderr
    res = site.register_agent("hv01")
    assert res.returncode == 0, res.stderr
    for name in ("prov1", "hv01"):
        assert (site.root / name / "identity.key").stat().st_mode & 0o777 == 0o600
        assert (site.root / name / "registration.json").stat().st_mode & 0o777 == 0o600
    # The cloud stores only the hash of the secret.
    if cloud.database_url:   # PostgreSQL: no file to grep; the hash column holds no secret
        assert all(doc["secret"] not in str(r) for r in cloud.db_rows("vault_keys"))
    else:
        assert doc["secret"] not in (cloud.data_dir / "metadata.db").read_bytes().decode(errors="replace")
    site.start_provider()
    site.start_agent("hv01")
    wait_for(lambda: site.link_state("prov1") == "Connected" and site.link_state("hv01") == "Connected",
             30, what="both daemons connected")

    def fresh() -> list[dict[str, object]] | None:
        servers = cloud.asr_json("server", "list", "--vault", "contoso")
        now = time.time()
        ok = [s for s in servers
              if s["last_heartbeat"] and now - from_iso(s["last_heartbeat"]) < 5 and s["state"] == "Connected"]
        return servers if len(ok) == 2 else None

    servers = wait_for(fresh, 30, what="fresh heartbeats")
    assert {(s["role"], s["name"]) for s in servers} == {("provider", "prov1"), ("agent", "hv01")}
    assert all(s["version"] == "0.1.0" for s in servers)
    agent = next(s for s in servers if s["role"] == "agent")
    assert agent["identity"].endswith("/agent/hv01") and agent["provider"] == "prov1"
    # A clean stop on SIGTERM.
    assert site.provider_proc is not None and site.provider_proc.stop() == 0
    assert site.agents["hv01"].stop() == 0
    assert cloud.stop() == 0


def _expect_refusal(res: object, code: str, exit_code: int, words: str) -> None:
    assert res.returncode == exit_code, (res.returncode, res.stderr)  # type: ignore[attr-defined]
    assert code in res.stderr and words in res.stderr.lower(), res.stderr  # type: ignore[attr-defined]
    assert "recommended action" in res.stderr  # type: ignore[attr-defined]


def test_key_file_refusals_change_nothing(cloud: Cloud, site: Site, tmp_path: Path) -> None:
    cloud.asr("vault", "create", "other", "--region", "japanwest")
    other_key = tmp_path / "other.key"
    cloud.asr("vault", "key", "other", "--out", str(other_key))
    old_key = tmp_path / "old.key"
    old_key.write_bytes(site.key.read_bytes())
    site.new_key()  # regenerating invalidates old.key
    before = store_snapshot(cloud)

    # regenerated (old) key
    _expect_refusal(site.register_agent("hv01", key=old_key), "ASR-0023", 23, "superseded")
    # key of another vault: the vault id edited to ours, the checksum recomputed so the
    # client-side check passes and the cloud's decides.
    doc = json.loads(other_key.read_text())
    doc["vault_id"] = json.loads(site.key.read_text())["vault_id"]
    doc.pop("checksum")
    forged = tmp_path / "forged.key"
    forged.write_bytes(keyfile.RegistrationKey(**doc).to_bytes())
    _expect_refusal(site.register_agent("hv01", key=forged), "ASR-0024", 24, "vault")
    # tampered key file (secret edited, checksum not fixed): refused before sending
    doc = json.loads(site.key.read_text())
    doc["secret"] = doc["secret"][:-2] + "AA"
    tampered = tmp_path / "tampered.key"
    tampered.write_text(json.dumps(doc))
    _expect_refusal(site.register_agent("hv01", key=tampered), "ASR-0021", 21, "checksum")
    # tampered and resealed: the cloud does not know the secret
    doc.pop("checksum")
    tampered.write_bytes(keyfile.RegistrationKey(**doc).to_bytes())
    _expect_refusal(site.register_agent("hv01", key=tampered), "ASR-0021", 21, "secret")
    # truncated file and unreadable paths
    trunc = tmp_path / "trunc.key"
    trunc.write_bytes(site.key.read_bytes()[:200])
    _expect_refusal(site.register_agent("hv01", key=trunc), "ASR-0021", 21, "not a registration key")
    _expect_refusal(site.register_agent("hv01", key=tmp_path / "missing.key"), "ASR-0021", 21, "cannot read")
    _expect_refusal(site.register_agent("hv01", key=tmp_path), "ASR-0021", 21, "cannot read")
    # expired key, judged by the client's clock
    clock = tmp_path / "future"
    clock.write_text(str(time.time() + 6 * 86400))
    res = run([str(BIN / "asr-agent"), "register", "--key-file", str(site.key), "--host", "hv01",
               "--provider", "127.0.0.1:1", "--state-dir", str(tmp_path / "hvx")],
              env=cloud.env(ASR_FAKE_CLOCK_FILE=str(clock)))
    _expect_refusal(res, "ASR-0022", 22, "expired")
    assert store_snapshot(cloud) == before


def test_expired_key_refused_by_cloud(procs: object, tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text(str(time.time()))
    cloud = Cloud(procs, tmp_path / "cloud", clock_file=clock).start()  # type: ignore[arg-type]
    cloud.asr("vault", "create", "v", "--region", "eastus")
    site = Site(cloud, tmp_path, "v")
    site.new_key()
    before = store_snapshot(cloud)
    clock.write_text(str(time.time() + 6 * 86400))  # the cloud's time moves past expiry
    res = run([str(BIN / "asr-provider"), "register", "--key-file", str(site.key), "--name", "p",
               "--state-dir", str(tmp_path / "p")], env=cloud.env(ASR_FAKE_CLOCK_FILE=""))
    _expect_refusal(res, "ASR-0022", 22, "expired")
    assert store_snapshot(cloud) == before


def test_duplicate_name_needs_force_and_revokes(cloud: Cloud, site: Site, tmp_path: Path) -> None:
    assert site.register_agent("hv01").returncode == 0
    first = json.loads((tmp_path / "hv01" / "registration.json").read_text())
    before = store_snapshot(cloud)
    res = run([str(BIN / "asr-agent"), "register", "--key-file", str(site.key), "--host", "hv01",
               "--provider", "127.0.0.1:1", "--state-dir", str(tmp_path / "elsewhere")], env=cloud.env())
    _expect_refusal(res, "ASR-0041", 41, "already registered")
    assert store_snapshot(cloud) == before
    old_pems = _pems(tmp_path / "hv01")
    res = run([str(BIN / "asr-agent"), "register", "--key-file", str(site.key), "--host", "hv01",
               "--provider", "127.0.0.1:1", "--state-dir", str(tmp_path / "elsewhere"), "--force"],
              env=cloud.env())
    assert res.returncode == 0, res.stderr
    assert first["identity"].endswith("/agent/hv01")
    # the replaced identity is revoked
    err = _heartbeat_error(cloud, old_pems)
    assert isinstance(err, CertificateRevoked), err
    assert _heartbeat_error(cloud, _pems(tmp_path / "elsewhere")) is None


def _pems(state: Path) -> tuple[bytes, bytes, bytes]:
    return ((state / "service_ca.pem").read_bytes(), (state / "identity.pem").read_bytes(),
            (state / "identity.key").read_bytes())


def _heartbeat_error(cloud: Cloud, pems: tuple[bytes, bytes, bytes], port: int | None = None) -> object:
    ch = client_channel(f"127.0.0.1:{port or cloud.port}", *pems)
    try:
        site_pb2_grpc.SiteStub(ch).Heartbeat(site_pb2.HeartbeatRequest(version="t"), timeout=10)
        return None
    except grpc.RpcError as exc:
        return from_rpc_error(exc)
    finally:
        ch.close()


def test_removed_server_is_refused(cloud: Cloud, site: Site) -> None:
    assert site.register_provider().returncode == 0
    site.start_provider()
    wait_for(lambda: site.link_state("prov1") == "Connected", 30)
    cloud.asr("server", "remove", "prov1", "--vault", "contoso", "--role", "provider")
    wait_for(lambda: site.link_state("prov1") == "Refused", 30, what="provider refused after removal")
    assert "ASR-0033" in str(site.status("prov1")["cloud"]["last_error"])
    err = _heartbeat_error(cloud, _pems(site.root / "prov1"))
    assert isinstance(err, CertificateRevoked) and "revoked" in str(err)
    assert cloud.asr_json("server", "list", "--vault", "contoso") == []


def test_wrong_roles_and_foreign_certificates(cloud: Cloud, site: Site, tmp_path: Path) -> None:
    assert site.register_agent("hv01").returncode == 0
    ca, cert, key = _pems(tmp_path / "hv01")
    before = store_snapshot(cloud)
    # an agent certificate calling an operator RPC
    ch = client_channel(cloud.endpoint, ca, cert, key)
    with pytest.raises(grpc.RpcError) as info:
        operator_pb2_grpc.OperatorStub(ch).ListVaults(common_pb2.Empty(), timeout=10)
    ch.close()
    err = from_rpc_error(info.value)
    assert isinstance(err, PermissionDenied) and "agent" in str(err)
    # a certificate from a foreign CA with a well-formed identity
    foreign = create_ca("mallory")
    k = new_key()
    vault_id = json.loads(site.key.read_text())["vault_id"]
    fake = sign_client(foreign, k.public_key(), "hv01", f"spiffe://asr/vault/{vault_id}/agent/hv01")
    from certs.pki import key_to_pem

    err2 = _heartbeat_error(cloud, (ca, cert_pem(fake), key_to_pem(k)))
    assert isinstance(err2, Unreachable), err2  # the TLS handshake itself fails
    # no client certificate: refused on the API port (handshake), unauthenticated on the
    # registration port
    ch = client_channel(f"127.0.0.1:{cloud.reg_port}", ca)
    with pytest.raises(grpc.RpcError) as info:
        site_pb2_grpc.SiteStub(ch).Heartbeat(site_pb2.HeartbeatRequest(), timeout=10)
    ch.close()
    assert isinstance(from_rpc_error(info.value), NotAuthenticated)
    ch = client_channel(cloud.endpoint, ca)
    with pytest.raises(grpc.RpcError) as info:
        operator_pb2_grpc.OperatorStub(ch).ListVaults(common_pb2.Empty(), timeout=10)
    ch.close()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # plain TCP, and plaintext gRPC
    for port in (cloud.port, cloud.reg_port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 64)
            s.settimeout(5)
            data = b""
            try:
                data = s.recv(4096)
            except (TimeoutError, ConnectionResetError):
                pass
            assert b"asr" not in data and not data.startswith(b"\x00\x00")
        plain = grpc.insecure_channel(f"127.0.0.1:{port}")
        with pytest.raises(grpc.RpcError):
            operator_pb2_grpc.OperatorStub(plain).ListVaults(common_pb2.Empty(), timeout=5)
        plain.close()
    # TLS without a client certificate using the ssl module directly: no application data
    ctx = ssl.create_default_context(cadata=ca.decode())
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", cloud.port), timeout=5) as raw:
        got = b""
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                got = tls.recv(1024) + tls.recv(1024)
        except (ssl.SSLError, ConnectionResetError, OSError):
            pass
        assert got == b"", got  # the server never speaks HTTP/2 to a caller without a certificate
    assert store_snapshot(cloud) == before
