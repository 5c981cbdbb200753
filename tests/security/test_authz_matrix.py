"""Every RPC of the wire, called as every kind of caller, against a written table.

The RPCs come from ``proto/asrpb/*.proto`` (the only source of truth for the wire): every
``service`` block and every ``rpc`` in it, with the message types and streaming shape taken
from the generated descriptors. ``CLOUD`` and ``HOSTLINK`` below say, per service, which RPCs
each role may call; a new RPC (or service) without an entry fails
``test_every_rpc_has_a_table_entry`` naming it, and so does an entry for an RPC that no longer
exists.

Callers (see conftest.py): no client certificate, the operator (init's Contributor), operators
created with the Reader and the Operator role (``cloudsvc.roles``), a provider and an agent of the
vault, a provider and an agent of another vault, a removed (revoked) agent, and a certificate
carrying a real agent's SPIFFE URI but issued by a foreign CA.

Outcomes, for each call with an empty request:

``passed``
    the call got past authorisation, whatever the business answer (NotFound, UsageError,
    StateConflict, a servicer's own PermissionDenied such as "VM '' is not protected in this
    agent's vault", even "not implemented"); a server stream that is still open at its
    deadline (``Commands``) passed too: refusals come before the first message.
``refused ASR-00NN``
    NotAuthenticated (ASR-0031: no certificate on the registration port), PermissionDenied
    (ASR-0032: the wrong role, or at the provider another vault) or CertificateRevoked
    (ASR-0033: the removed agent, where an agent may call) raised by the authorisation interceptor
    (``asrchannel.authz``), which marks its refusals with a last detail ``REFUSED_AT <method>``
    so that they cannot be confused with a servicer's answer.
``tls``
    the connection never carried a call (UNAVAILABLE): the mTLS handshake refused the caller.
    ``test_mtls_handshake_refuses_...`` shows with a raw TLS client that it is the handshake
    that fails, and that the same client with a proper certificate gets HTTP/2 frames.

Whether an RPC that passed authorisation only touches the caller's own vault is the
business of the servicers: ``test_cross_vault_replication_is_refused`` checks it with real
objects of another vault.
"""

from __future__ import annotations

import importlib
import re
import socket
import ssl
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from asrchannel.authz import REFUSED_AT
from asrchannel.status import from_rpc_error
from asrchannel.tls import client_channel
from tests.harness import REPO
from tests.security.conftest import Caller, World

PROTO_DIR = REPO / "proto" / "asrpb"

# ---- the table ------------------------------------------------------------------------------
# role -> service -> the RPCs that role may call. "public": anyone whose connection completes
# the handshake (on the registration port: anyone at all).
CLOUD: dict[str, dict[str, set[str]]] = {
    "public": {
        "asr.v1.Registration": {"Register"},
        "grpc.health.v1.Health": {"Check"},
        "grpc.reflection.v1alpha.ServerReflection": {"ServerReflectionInfo"},  # docs: reflection for tooling
    },
    "operator": {
        "asr.v1.Operator": {
            "ListRegions", "CreateVault", "ListVaults", "GetVault", "DeleteVault", "GenerateKey", "ActivateKey",
            "CreateStorage", "ListStorage", "DeleteStorage", "CreateNetwork", "ListNetworks", "DeleteNetwork",
            "ListServers", "RemoveServer", "CreateOperator",
        },
        "asr.v1.Protection": {
            "ListClouds", "ProtectCloud", "ListVms", "GetVm", "ProtectVm", "UnprotectVm", "ListJobs", "GetJob",
            "ListEvents", "CreateNetworkMapping", "ListNetworkMappings", "DeleteNetworkMapping",
        },
        "asr.v1.Billing": {"Report"},
        "asr.v1.Points": {"ListPoints", "VerifyPoint", "ExportPoint", "RunMaintenance", "RebuildIndex"},
        "asr.v1.Failover": {
            "TestFailover", "TestFailoverComplete", "PlannedFailover", "UnplannedFailover", "Commit", "Cancel",
            "ChangePoint", "Migrate", "Reprotect", "ListRecoveredVms", "DeleteRecoveredVm", "ResumeJob", "CreatePlan",
            "GetPlan",
            "ListPlans",
            "AddGroup", "AddAction", "DeletePlan",
        },
    },
    # operators with lesser roles (cloudsvc.roles; the "operator" above is init's Contributor)
    "reader": {
        "asr.v1.Operator": {"ListRegions", "ListVaults", "GetVault", "ListStorage", "ListNetworks", "ListServers"},
        "asr.v1.Protection": {"ListClouds", "ListVms", "GetVm", "ListJobs", "GetJob", "ListEvents",
                              "ListNetworkMappings"},
        "asr.v1.Billing": {"Report"},
        "asr.v1.Points": {"ListPoints", "VerifyPoint"},
        "asr.v1.Failover": {"ListRecoveredVms", "GetPlan", "ListPlans"},
    },
    "failover": {
        "asr.v1.Failover": {"TestFailover", "TestFailoverComplete", "PlannedFailover", "UnplannedFailover", "Commit",
                            "Cancel", "ChangePoint", "Reprotect", "ResumeJob"},
    },
    "provider": {
        "asr.v1.Site": {"Heartbeat", "SyncInventory", "Commands", "CompleteCommand", "RequestProtection"},
    },
    "agent": {
        "asr.v1.Site": {"Heartbeat"},
        "asr.v1.Replication": {
            "BeginCycle", "Missing", "PutChunks", "CommitPoint", "GetBlockMap", "ReportProgress", "CheckEpoch",
            "ReportReplica", "ReportReverse",
        },
        "asr.v1.FailbackData": {"Diff", "Sync"},   # Sync: served by recovery hosts only (UNIMPLEMENTED here)
    },
}
# The provider's server: only agents of its own vault that its configuration names as hosts.
HOSTLINK: dict[str, dict[str, set[str]]] = {
    "agent": {"asr.v1.HostLink": {"ReportInventory", "Commands", "CompleteCommand"}},
}
# Services served by the provider rather than the cloud.
PROVIDER_SERVICES = {"asr.v1.HostLink"}
# RPCs outside proto/asrpb that the cloud serves, and the module holding their descriptors.
EXTRA_SERVICES = {
    "grpc.health.v1.Health": ("grpc_health.v1.health_pb2", {"Check"}),
    "grpc.reflection.v1alpha.ServerReflection": ("grpc_reflection.v1alpha.reflection_pb2", {"ServerReflectionInfo"}),
}

TLS = "tls"
# The roles each caller holds at each server; TLS: the handshake refuses it.
CLOUD_ROLES: dict[str, set[str] | str] = {
    "none": TLS,                                   # API port; the registration port: see below
    "operator": {"public", "operator"},
    "Reader operator": {"public", "reader"},
    "Operator operator": {"public", "reader", "failover"},
    "provider": {"public", "provider"},
    "agent": {"public", "agent"},
    "other-vault provider": {"public", "provider"},  # its own vault's: see test_cross_vault_*
    "other-vault agent": {"public", "agent"},
    "removed agent": {"public"},                   # revoked: refused from then on (ASR-0033)
    "foreign CA": TLS,
}
# How a refusal is coded: PermissionDenied (ASR-0032) unless named here as (role, code), the
# code of the refusals where that role would pass (None: every refusal). The removed agent is
# CertificateRevoked where an agent may call; elsewhere the role check, which comes first,
# refuses it.
CLOUD_REFUSALS: dict[str, tuple[str | None, str]] = {"removed agent": ("agent", "ASR-0033")}
REGISTRATION_PORT_ROLES: dict[str, set[str] | str] = {"none": {"public"}}   # refusals: ASR-0031
HOSTLINK_ROLES: dict[str, set[str] | str] = {
    "none": TLS,
    "operator": set(),
    "Reader operator": set(),
    "Operator operator": set(),
    "provider": set(),
    "agent": {"agent"},
    "other-vault provider": set(),
    "other-vault agent": set(),                    # refused by the provider: another vault
    "removed agent": set(),
    "foreign CA": TLS,
}
# Where behaviour knowingly differs from the table, with the reason. An entry that stops
# being true fails the test ("remove it").
KNOWN_GAPS: dict[tuple[str, str], tuple[set[str], str]] = {
    ("hostlink", "removed agent"): (
        {"agent"},
        "docs/design.md, 'Limits known today': the provider cannot consult the cloud's revocation "
        "list; a removed agent still named in its configuration is admitted (the cloud refuses it)",
    ),
}


# ---- the wire, from the .proto files ----------------------------------------------------------
def proto_rpcs() -> dict[str, dict[str, str]]:
    """service full name -> rpc name -> the .proto file declaring it."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted(PROTO_DIR.glob("*.proto")):
        text = re.sub(r"//[^\n]*", "", path.read_text())
        package = re.search(r"^\s*package\s+([\w.]+)\s*;", text, re.M)
        assert package, path
        for m in re.finditer(r"\bservice\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
            rpcs = out.setdefault(f"{package.group(1)}.{m.group(1)}", {})
            for r in re.finditer(r"\brpc\s+(\w+)\s*\(", m.group(2)):
                rpcs[r.group(1)] = path.name
    return out


def _descriptor(service: str, rpc: str) -> MethodDescriptor:
    if service in EXTRA_SERVICES:
        module = importlib.import_module(EXTRA_SERVICES[service][0])
    else:
        declared_in = proto_rpcs()[service][rpc]
        module = importlib.import_module(f"asrpb.{declared_in.removesuffix('.proto')}_pb2")
    svc = module.DESCRIPTOR.services_by_name.get(service.rsplit(".", 1)[-1])
    assert svc is not None and rpc in svc.methods_by_name, (
        f"{service}/{rpc} is in the .proto files but not in the generated stubs: run bash proto/generate.sh")
    return svc.methods_by_name[rpc]


def _all_rpcs(table: dict[str, dict[str, set[str]]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for services in table.values():
        for service, rpcs in services.items():
            out.setdefault(service, set()).update(rpcs)
    return out


def test_every_rpc_has_a_table_entry() -> None:
    wire = proto_rpcs()
    assert {"asr.v1.Operator", "asr.v1.Replication", "asr.v1.HostLink"} <= set(wire)  # the parser works
    problems = []
    for name, table, services in (
        ("CLOUD", CLOUD, {s for s in wire if s not in PROVIDER_SERVICES} | set(EXTRA_SERVICES)),
        ("HOSTLINK", HOSTLINK, PROVIDER_SERVICES),
    ):
        entered = _all_rpcs(table)
        for service in sorted(services):
            rpcs = set(EXTRA_SERVICES[service][1]) if service in EXTRA_SERVICES else set(wire[service])
            for rpc in sorted(rpcs - entered.get(service, set())):
                where = EXTRA_SERVICES[service][0] if service in EXTRA_SERVICES else f"proto/asrpb/{wire[service][rpc]}"
                problems.append(f"{service}/{rpc} ({where}) has no entry in {name}: say which roles may call it")
            for rpc in sorted(entered.get(service, set()) - rpcs):
                problems.append(f"{name} names {service}/{rpc}, which the wire does not have")
        for service in sorted(set(entered) - services):
            problems.append(f"{name} names service {service}, which this server does not serve")
    assert not problems, "\n".join(problems)


def test_the_parser_sees_a_new_rpc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: an RPC added to a copy of the .proto files is reported."""
    for p in PROTO_DIR.glob("*.proto"):
        text = p.read_text()
        if p.name == "operator.proto":
            text = text.replace("service Billing {", "service Billing {\n  rpc Refund(BillingRequest) returns (Empty);")
        (tmp_path / p.name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "PROTO_DIR", tmp_path)
    with pytest.raises(AssertionError) as info:
        test_every_rpc_has_a_table_entry()
    assert "asr.v1.Billing/Refund (proto/asrpb/operator.proto) has no entry in CLOUD" in str(info.value)


# ---- calling ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rpc:
    service: str
    name: str
    desc: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def rpcs_of(table: dict[str, dict[str, set[str]]]) -> list[Rpc]:
    return [Rpc(s, r, _descriptor(s, r)) for s, names in sorted(_all_rpcs(table).items()) for r in sorted(names)]


def call(channel: grpc.Channel, rpc: Rpc) -> str:
    """One call with an empty request; returns passed / refused / tls (or what went wrong)."""
    req_cls = message_factory.GetMessageClass(rpc.desc.input_type)
    resp_cls = message_factory.GetMessageClass(rpc.desc.output_type)
    kind = ("stream" if rpc.desc.client_streaming else "unary") + "_" + (
        "stream" if rpc.desc.server_streaming else "unary")
    stub = getattr(channel, kind)(rpc.path, request_serializer=req_cls.SerializeToString,
                                  response_deserializer=resp_cls.FromString)
    request: Any = iter([req_cls()]) if rpc.desc.client_streaming else req_cls()
    try:
        if rpc.desc.server_streaming:
            for _ in stub(request, timeout=6):
                pass
        else:
            stub(request, timeout=30)
        return "passed"
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.UNAVAILABLE:
            return TLS
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and rpc.desc.server_streaming:
            return "passed"
        err = from_rpc_error(exc)
        if err.details and err.details[-1].startswith(REFUSED_AT):
            return f"refused {err.code}"
        return "passed"


def allows(table: dict[str, dict[str, set[str]]], roles: set[str], rpc: Rpc) -> bool:
    return any(rpc.name in table.get(r, {}).get(rpc.service, set()) for r in roles)


def expected(roles: set[str] | str, table: dict[str, dict[str, set[str]]], rpc: Rpc,
             refusal: tuple[str | None, str] | None) -> str:
    if roles == TLS:
        return TLS
    assert isinstance(roles, set)
    if allows(table, roles, rpc):
        return "passed"
    if refusal is not None and (refusal[0] is None or allows(table, {refusal[0]}, rpc)):
        return f"refused {refusal[1]}"
    return "refused ASR-0032"


def run_matrix(world: World, endpoint: str, table: dict[str, dict[str, set[str]]],
               roles: dict[str, set[str] | str], server: str,
               refusals: dict[str, tuple[str | None, str]]) -> list[str]:
    rpcs = rpcs_of(table)
    jobs: list[tuple[str, Rpc, str, Any]] = []
    channels = []
    with ThreadPoolExecutor(max_workers=16) as pool:
        for label, held in roles.items():
            caller: Caller = world.callers[label]
            gap = KNOWN_GAPS.get((server, label))
            if gap is not None:
                held = gap[0]
            ch = client_channel(endpoint, world.service_ca, caller.cert, caller.key)
            channels.append(ch)
            refusal = refusals.get(label)
            for rpc in rpcs:
                jobs.append((label, rpc, expected(held, table, rpc, refusal), pool.submit(call, ch, rpc)))
        mismatches = []
        for label, rpc, want, fut in jobs:
            got = fut.result()
            if got != want:
                note = f"  (KNOWN_GAPS: {KNOWN_GAPS[(server, label)][1]}; if fixed, remove the entry)" if (
                    server, label) in KNOWN_GAPS else ""
                mismatches.append(f"{server}: {label:<21} {rpc.path:<50} expected {want}, got {got}{note}")
    for ch in channels:
        ch.close()
    return mismatches


def test_cloud_api_port_matrix(world: World) -> None:
    mismatches = run_matrix(world, world.cloud.endpoint, CLOUD, CLOUD_ROLES, "cloud", CLOUD_REFUSALS)
    assert not mismatches, "\n" + "\n".join(mismatches)
    assert world.cloud.healthy()  # every "tls" outcome was a refusal, not a dead server


def test_cloud_registration_port_matrix(world: World) -> None:
    """The registration port never asks for a client certificate: only the public RPCs pass."""
    endpoint = f"127.0.0.1:{world.cloud.reg_port}"
    mismatches = run_matrix(world, endpoint, CLOUD, REGISTRATION_PORT_ROLES, "registration port",
                            {"none": (None, "ASR-0031")})
    assert not mismatches, "\n" + "\n".join(mismatches)


def test_provider_hostlink_matrix(world: World) -> None:
    mismatches = run_matrix(world, world.provider_endpoint, HOSTLINK, HOSTLINK_ROLES, "hostlink", {})
    assert not mismatches, "\n" + "\n".join(mismatches)
    assert world.site.provider_proc is not None and world.site.provider_proc.alive()


# ---- the handshake itself -----------------------------------------------------------------------
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


@dataclass(frozen=True)
class Probe:
    handshake: str        # "ok" or the error
    version: str          # negotiated TLS version, "" when none
    h2: bool              # the server spoke HTTP/2 (a SETTINGS frame came back)


def tls_probe(port: int, ca: bytes, caller: Caller | None = None, max_version: ssl.TLSVersion | None = None) -> Probe:
    """A raw TLS client (Python's ssl, not gRPC): handshake, send the HTTP/2 preface, read."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.decode())
    ctx.set_alpn_protocols(["h2"])
    if max_version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = max_version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL 3 offer what TLS 1.0/1.1 can use
    if caller is not None and caller.cert is not None:
        assert caller.key is not None
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "c.pem").write_bytes(caller.cert)
            (Path(d) / "k.pem").write_bytes(caller.key)
            ctx.load_cert_chain(str(Path(d) / "c.pem"), str(Path(d) / "k.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        except (ssl.SSLError, OSError) as exc:
            return Probe(f"{type(exc).__name__}: {exc}", "", False)
        with tls:
            version = tls.version() or ""
            got = b""
            try:
                tls.sendall(H2_PREFACE)
                while len(got) < 9:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except (ssl.SSLError, OSError) as exc:
                # TLS 1.3: a missing or foreign client certificate is refused by an alert
                # right after the client's Finished, so it surfaces on the first read
                return Probe(f"{type(exc).__name__}: {exc}", version, False)
            return Probe("ok", version, len(got) >= 9 and got[3] == 0x04)


def test_mtls_handshake_refuses_no_certificate_and_a_foreign_ca(world: World) -> None:
    ca = world.service_ca
    for port, good in ((world.cloud.port, world.callers["operator"]),
                       (world.site.provider_port, world.callers["agent"])):
        ok = tls_probe(port, ca, good)
        assert ok.handshake == "ok" and ok.h2, ok  # the probe can see a server that accepts
        for label in ("none", "foreign CA"):
            # TLS 1.3 completes the client's side of the handshake before the server checks
            # the client's certificate; the refusal is an alert or a close instead of HTTP/2
            bad = tls_probe(port, ca, world.callers[label])
            assert not bad.h2, (port, label, bad)
    # the registration port asks for no certificate: the handshake completes without one
    reg = tls_probe(world.cloud.reg_port, ca)
    assert reg.handshake == "ok" and reg.h2, reg


def test_tls_below_1_2_is_refused_on_every_port(world: World) -> None:
    """A client offering at most TLS 1.1 gets no connection on the cloud's API and
    registration ports nor on the provider's port, while the same client allowed TLS 1.2
    connects. gRPC's TLS servers (asrchannel.tls.server_credentials) take gRPC core's floor of
    TLS 1.2; this test is what shows it. First the probe proves it really offers TLS 1.1: it
    completes a TLS 1.1 handshake with a local server that speaks nothing newer (so a refusal
    below is the server's, not the local OpenSSL's)."""
    with legacy_tls_server() as (port, ca_pem):
        probe = tls_probe(port, ca_pem, max_version=ssl.TLSVersion.TLSv1_1)
    assert probe.handshake == "ok" and probe.version == "TLSv1.1", probe
    ca = world.service_ca
    for port, caller in ((world.cloud.port, world.callers["operator"]), (world.cloud.reg_port, None),
                         (world.site.provider_port, world.callers["agent"])):
        old = tls_probe(port, ca, caller, max_version=ssl.TLSVersion.TLSv1_1)
        assert old.handshake != "ok" and old.version == "" and not old.h2, (port, old)
        assert "version" in old.handshake.lower() or "protocol" in old.handshake.lower(), (port, old)
        new = tls_probe(port, ca, caller, max_version=ssl.TLSVersion.TLSv1_2)
        assert new.handshake == "ok" and new.version == "TLSv1.2" and new.h2, (port, new)


@contextmanager
def legacy_tls_server() -> Iterator[tuple[int, bytes]]:
    """A one-connection TLS server in a thread that speaks at most TLS 1.1; yields its port
    and the CA certificate to trust."""
    from certs.pki import create_ca, issue_server_cert

    ca = create_ca("tls 1.1 test CA")
    server = issue_server_cert(ca, ["127.0.0.1"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.pem").write_bytes(server.cert_pem)
        (Path(d) / "k.pem").write_bytes(server.key_pem)
        ctx.load_cert_chain(str(Path(d) / "c.pem"), str(Path(d) / "k.pem"))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # a SETTINGS frame
                    tls.recv(64)
            except (OSError, ssl.SSLError):
                pass

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            yield int(listener.getsockname()[1]), ca.cert_pem
        finally:
            t.join(10)
