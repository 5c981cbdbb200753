"""The gRPC health service follows the metadata store: a cloud service whose PostgreSQL is down
fails nearly every call (ASR-0051), so it must say NOT_SERVING (for the whole server, "", and
for each named service) and a load balancer sends calls elsewhere; once PostgreSQL is back it
says SERVING again by itself, without a restart. Regression: it stayed SERVING throughout."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from asrerrors import MetadataUnavailable
from cloudsvc.readiness import Readiness
from cloudsvc.schema import MIGRATIONS
from metastore.database import open_database
from tests.harness import Cloud, Procs, wait_for
from tests.pgserver import PgServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# the whole server, and named services of both kinds of caller
SERVICES = ("", "asr.v1.Operator", "asr.v1.Site", "asr.v1.Registration")


def statuses(cloud: Cloud) -> set[int]:
    """What the health service says of each of SERVICES (on the registration port, which needs
    no client certificate: what a load balancer's check uses)."""
    ca = (cloud.data_dir / "pki" / "ca.pem").read_bytes()
    ch = grpc.secure_channel(f"{cloud.host}:{cloud.reg_port}", grpc.ssl_channel_credentials(ca))
    try:
        stub = health_pb2_grpc.HealthStub(ch)
        return {stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=5).status for s in SERVICES}
    finally:
        ch.close()


def test_health_not_serving_while_postgres_is_down(procs: Procs, tmp_path: Path, own_pg: PgServer) -> None:
    cloud = Cloud(procs, tmp_path / "cloud", database_url=own_pg.new_database()).start()
    assert statuses(cloud) == {SERVING}

    own_pg.stop("immediate")                     # like a crash of the server
    wait_for(lambda: statuses(cloud) == {NOT_SERVING}, 30, interval=0.2, what="health NOT_SERVING")
    assert cloud.asr("vault", "list", check=False).returncode == 51   # indeed nothing to serve with

    own_pg.start()
    wait_for(lambda: statuses(cloud) == {SERVING}, 30, interval=0.2, what="health SERVING again")
    assert cloud.asr("vault", "list", check=False).returncode == 0
    assert cloud.proc is not None and cloud.proc.alive()   # the same process: no restart
    assert "metadata store unreachable: not serving" in cloud.proc.text()
    assert "metadata store reachable again: serving" in cloud.proc.text()


def test_readiness_follows_the_probe_not_one_broken_connection(own_pg: PgServer) -> None:
    """The watch's rules, without a service: a failed call wakes the probe; a connection cut by a
    restart of PostgreSQL between two probes is no outage (the probe tries a new one); only the
    database not answering is."""
    db = open_database(own_pg.new_database(), MIGRATIONS)
    ready = Readiness(db, threading.Event())
    seen: list[bool] = []
    ready.subscribe(seen.append)
    try:
        assert ready.probe() and seen == [True]
        own_pg.stop("immediate")
        own_pg.start()                           # the probe's connection is now a dead one
        assert ready.probe() and seen == [True]

        own_pg.stop("immediate")
        with pytest.raises(MetadataUnavailable):
            db.query("SELECT 1")                 # a call meets the outage: the watch is told
        assert ready._noticed.is_set()
        assert not ready.probe() and seen == [True, False] and not ready._noticed.is_set()
        with pytest.raises(MetadataUnavailable):
            db.query("SELECT 1")                 # already not serving: no busy re-probing
        assert not ready._noticed.is_set()

        own_pg.start()
        assert ready.probe() and seen == [True, False, True]
    finally:
        db.close()
