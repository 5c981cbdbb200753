"""asr-cloudsvc: init a data directory, serve the recovery site."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from cryptography import x509
from cryptography.hazmat.primitives import serialization

import durablefile
from asrclock import from_environment
from asrerrors import AlreadyExists, UsageError
from asrops import allocator, environment
from asrops.cli import dispatch
from asrops.lifecycle import Lifecycle
from asrops.logs import setup
from certs.pki import CertKey, PrivateKey, create_ca, issue_server_cert, key_to_pem, make_csr, new_key, sign_csr
from cloudsvc import config as cfgmod
from cloudsvc.registrar import add_operator
from cloudsvc.schema import MIGRATIONS
from metastore.database import open_database

VERSION = "0.1.0"


def _hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"address {value!r} must be HOST:PORT with a port from 1 to 65535")
    return value


def cmd_init(args: argparse.Namespace) -> int:
    data_dir = os.path.abspath(args.data_dir)
    if os.path.exists(os.path.join(data_dir, "cloudsvc.toml")):
        raise AlreadyExists(
            f"{data_dir} is already initialised",
            action="Use another --data-dir, or remove the directory to start over.",
        )
    listen = _hostport(args.listen)
    host, _, port = listen.rpartition(":")
    reg = _hostport(args.registration_listen or f"{host}:{int(port) + 1}")
    endpoints = [_hostport(e) for e in args.endpoint]
    if args.registration_endpoint and len(args.registration_endpoint) != len(endpoints):
        raise UsageError(f"{len(args.registration_endpoint)} --registration-endpoint for {len(endpoints)} --endpoint",
                         action="Give one --registration-endpoint per --endpoint (in the same order), or none: "
                                "each --endpoint's port + 1 is its registration address then.")
    reg_endpoints = [_hostport(e) for e in args.registration_endpoint] or [
        f"{h}:{int(p) + 1}" for h, _, p in (e.rpartition(":") for e in endpoints)]
    # the server certificate must carry every public name: a second service started from a
    # copy of this data directory answers under the same certificate
    public = [e.rpartition(":")[0].strip("[]") for e in endpoints + reg_endpoints]
    names = list(dict.fromkeys([host.strip("[]"), *args.name, *public, "localhost", "127.0.0.1"]))
    cfg = cfgmod.CloudConfig.new(data_dir, listen=listen, registration_listen=reg, names=names,
                                 endpoints=endpoints, registration_endpoints=reg_endpoints,
                                 database_url=args.database_url)
    ca = create_ca("asr service CA")
    server = issue_server_cert(ca, names)
    # The operator credential: a client certificate signed by the service CA.
    op_key = new_key()
    op_cert = sign_csr(ca, make_csr(op_key, "admin"), "spiffe://asr/operator/admin", days=3650)
    with _left_as_found_on_failure(data_dir):
        # the database first: the one step that needs something beyond this machine (PostgreSQL
        # may be down: ASR-0051), so a refused init has written no file to trip the next one
        if not cfg.database_url:
            os.makedirs(data_dir, exist_ok=True)   # SQLite's file lives in the data directory
        db = open_database(cfg.database, MIGRATIONS)   # PostgreSQL: the database must exist, empty or ours
        try:
            add_operator(db, format(op_cert.serial_number, "x"), "admin", from_environment().now())
        finally:
            db.close()
        _write_files(cfg, ca, server, op_key, op_cert, listen)
    out = {"data_dir": data_dir, "listen": listen, "registration_listen": reg,
           "operator_credentials": cfg.operator_credentials, "names": names,
           "endpoints": cfg.public_endpoints()}
    print(json.dumps(out, indent=2) if args.json else
          f"initialised {data_dir}\n  api: {listen}\n  registration: {reg}\n"
          f"  operator credentials: {cfg.operator_credentials}")
    return 0


@contextmanager
def _left_as_found_on_failure(data_dir: str) -> Iterator[None]:
    """Undo what a failing init made in ``data_dir`` (the directory itself if it was not there,
    else the entries that were not): a failed init leaves nothing half made, and running it
    again once the cause is fixed works."""
    existed = os.path.isdir(data_dir)
    before = set(os.listdir(data_dir)) if existed else set()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(data_dir, ignore_errors=True)
        elif os.path.isdir(data_dir):
            for name in set(os.listdir(data_dir)) - before:
                path = os.path.join(data_dir, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with suppress(OSError):   # the cause of the failure is the error to show
                        os.unlink(path)
        raise


def _write_files(cfg: cfgmod.CloudConfig, ca: CertKey, server: CertKey, op_key: PrivateKey, op_cert: x509.Certificate,
                 listen: str) -> None:
    """The data directory's files: PKI, operator credential, and last cloudsvc.toml (whose
    presence means "initialised")."""
    os.makedirs(cfg.pki_dir, mode=0o700, exist_ok=True)
    os.makedirs(cfg.storage_dir, exist_ok=True)
    durablefile.write_atomic(os.path.join(cfg.pki_dir, "ca.key"), ca.key_pem, durablefile.PRIVATE)
    durablefile.write_atomic(os.path.join(cfg.pki_dir, "ca.pem"), ca.cert_pem)
    durablefile.write_atomic(os.path.join(cfg.pki_dir, "server.key"), server.key_pem, durablefile.PRIVATE)
    durablefile.write_atomic(os.path.join(cfg.pki_dir, "server.pem"), server.cert_pem)
    cred = {
        # the addresses clients use (``endpoints``, e.g. several cloud services) where they are
        # set: asr then takes the first that answers; else this service's own listen address
        "endpoint": ",".join(cfg.endpoints) if cfg.endpoints else listen,
        "service_ca_pem": ca.cert_pem.decode(),
        "cert_pem": op_cert.public_bytes(serialization.Encoding.PEM).decode(),
        "key_pem": key_to_pem(op_key).decode(),
    }
    durablefile.write_atomic(cfg.operator_credentials, json.dumps(cred, indent=2).encode(), durablefile.PRIVATE)
    # a database URL may carry a password: then only the service's user reads the file
    mode = durablefile.PRIVATE if cfg.database_url else durablefile.PUBLIC
    durablefile.write_atomic(cfg.path, cfg.to_toml().encode(), mode)


def cmd_serve(args: argparse.Namespace) -> int:
    return serve(args.data_dir)


def serve(data_dir: str, life: Lifecycle | None = None) -> int:
    """The cloud service's daemon core (see ``asrops.lifecycle``): a terminal or systemd
    passes no ``life`` (signals stop it); the Windows service host passes its own."""
    from cloudsvc.server import build
    from cloudsvc.service import CloudService

    log = setup("asr-cloudsvc")
    environment.check("asr-cloudsvc")   # test hooks and bad tuning values refuse to start
    allocator.tune()
    cfg = cfgmod.load(data_dir)
    life = life or Lifecycle.for_console()
    svc = CloudService(cfg, from_environment())
    server, health = build(svc)
    svc.start(life.watch)
    server.start()
    log.info("serving", extra={"fields": {"listen": cfg.listen, "registration": cfg.registration_listen}})
    life.ready(f"serving on {cfg.listen}")
    life.serve()
    log.info("stopping")
    life.stop()
    svc.stopping.set()
    svc.commands.notify()
    health.enter_graceful_shutdown()
    server.stop(grace=5).wait()
    svc.close()
    log.info("stopped")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr-cloudsvc", description="Site Recovery cloud service")
    p.add_argument("--version", action="version", version=VERSION)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init", help="create the service CA, server certificate and operator credential")
    i.add_argument("--data-dir", required=True)
    i.add_argument("--listen", default="127.0.0.1:7443")
    i.add_argument("--registration-listen", default="")
    i.add_argument("--name", action="append", default=[], help="extra DNS name or IP for the server certificate")
    i.add_argument("--endpoint", action="append", default=[], metavar="HOST:PORT",
                   help="a cloud service's public API address, once per service in the order clients try them "
                        "(cloudsvc.toml endpoints; default: --listen only)")
    i.add_argument("--registration-endpoint", action="append", default=[], metavar="HOST:PORT",
                   help="the registration address of each --endpoint, in the same order (default: each "
                        "--endpoint's port + 1)")
    i.add_argument("--database-url", default="", help="postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE: keep "
                   "the metadata in PostgreSQL (the database must exist); default: SQLite in the data directory")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_init)
    s = sub.add_parser("serve", help="serve the recovery site")
    s.add_argument("--data-dir", required=True)
    s.set_defaults(fn=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    return dispatch(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
