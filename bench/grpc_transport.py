"""The floor under replication: TLS gRPC streaming between two processes with nothing else to
do, and the latency of a small unary call (like ``Missing``) while a stream runs, on the
stream's connection or on a connection of its own. The peer is the same over plaintext
gRPC, to show what TLS costs. Figures, not a test.

    .venv/bin/python bench/grpc_transport.py [--mib 512] [--message-mib 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asrchannel.tls import MAX_MESSAGE  # noqa: E402
from asrops import allocator  # noqa: E402

OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
TICK = os.sysconf("SC_CLK_TCK")


def _raw(x: bytes) -> bytes:
    return x


def self_signed(directory: Path) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "key.pem").write_bytes(key_pem)
    (directory / "cert.pem").write_bytes(cert_pem)
    return key_pem, cert_pem


def serve(port: int, directory: Path, tls: bool) -> None:
    allocator.tune()

    def put(messages: Any, context: Any) -> bytes:
        return str(sum(len(m) for m in messages)).encode()

    def ask(request: bytes, context: Any) -> bytes:
        return request[:32]

    handler = grpc.method_handlers_generic_handler("bench", {
        "Put": grpc.stream_unary_rpc_method_handler(put, _raw, _raw),
        "Ask": grpc.unary_unary_rpc_method_handler(ask, _raw, _raw)})
    server = grpc.server(futures.ThreadPoolExecutor(8), options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    if tls:
        creds = grpc.ssl_server_credentials([((directory / "key.pem").read_bytes(),
                                              (directory / "cert.pem").read_bytes())])
        server.add_secure_port(f"127.0.0.1:{port}", creds)
    else:
        server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def channel(port: int, cert: bytes | None, own: bool) -> grpc.Channel:
    opts = OPTIONS + ([("grpc.use_local_subchannel_pool", 1)] if own else [])
    if cert is None:
        return grpc.insecure_channel(f"127.0.0.1:{port}", options=opts)
    return grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(cert),
                               options=opts + [("grpc.ssl_target_name_override", "localhost")])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def one_run(port: int, cert: bytes | None, server_pid: int, total: int, message: int,
            probe: str) -> dict[str, Any]:
    """Stream ``total`` bytes in ``message``-byte messages; meanwhile (``probe`` "shared" or
    "own") a unary call every 5 ms on the stream's connection or on one of its own."""
    ch = channel(port, cert, False)
    put = ch.stream_unary("/bench/Put", _raw, _raw)
    ask_ch = channel(port, cert, True) if probe == "own" else ch
    ask = ask_ch.unary_unary("/bench/Ask", _raw, _raw)
    ask(b"x" * 2048, timeout=10)  # connect and handshake before timing
    payload = os.urandom(message)
    latencies: list[float] = []
    stop = threading.Event()

    def probing() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            ask(b"x" * 2048, timeout=10)
            latencies.append(time.perf_counter() - t)
            stop.wait(0.005)

    prober = threading.Thread(target=probing)
    if probe != "none":
        prober.start()
    server_cpu = cpu_seconds(server_pid)
    own_cpu = time.process_time()
    started = time.perf_counter()
    put(iter([payload] * (total // message)), timeout=600)
    seconds = time.perf_counter() - started
    out: dict[str, Any] = {"MBps": round(total / seconds / 1e6),
                           "client_cpu_s": round(time.process_time() - own_cpu, 2),
                           "server_cpu_s": round(cpu_seconds(server_pid) - server_cpu, 2)}
    stop.set()
    if probe != "none":
        prober.join()
        latencies.sort()
        out["unary_p50_ms"] = round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None
    ch.close()
    if ask_ch is not ch:
        ask_ch.close()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--message-mib", type=int, default=2)
    ap.add_argument("--serve", nargs=3, metavar=("PORT", "DIR", "TLS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]), args.serve[2] == "1")
        return 0
    allocator.tune()
    result: dict[str, Any] = {"machine": f"{os.cpu_count()} CPUs", "mib": args.mib, "message_mib": args.message_mib}
    with tempfile.TemporaryDirectory() as tmp:
        _key, cert = self_signed(Path(tmp))
        for tls in (True, False):
            port = free_port()
            server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), tmp, "1" if tls else "0"])
            try:
                grpc.channel_ready_future(channel(port, cert if tls else None, True)).result(timeout=30)
                runs = {probe: one_run(port, cert if tls else None, server.pid, args.mib << 20,
                                       args.message_mib << 20, probe)
                        for probe in (("none", "shared", "own") if tls else ("none",))}
            finally:
                server.terminate()
                server.wait(timeout=30)
            result["tls" if tls else "plaintext_peer"] = runs
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
