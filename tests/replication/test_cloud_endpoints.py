"""Issue 15, part 3: providers and agents follow several cloud endpoints.

The cloud service's configuration lists its endpoints; key files and registrations carry
them; registration, the provider's link and sync, and an agent's replication use the first
that answers and move to the next when theirs goes away (asrchannel.endpoints)."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

import pytest

from agent.hypervisor import LocalHypervisor
from tests.harness import BIN, Cloud, Site, free_port, run, wait_for
from tests.proxies import Forwarder, TinyProxy
from tests.replication.fixture import MiB, protect, serve_endpoints


def wait_on(site: Site, endpoint: str, timeout: float = 30, names: tuple[str, ...] = ("prov1", "hv01")) -> None:
    """Until the provider's and the agent's links are Connected on ``endpoint``."""
    def on() -> bool:
        links = [site.status(name).get("cloud", {}) for name in names]
        return all(link.get("state") == "Connected" and link.get("target") == endpoint for link in links)

    wait_for(on, timeout, what=f"the provider's and the agent's links on {endpoint}")


@pytest.mark.parametrize("via_proxy", [False, True], ids=["direct", "tinyproxy"])
def test_a_dead_first_endpoint_is_passed_over(cloud: Cloud, tmp_path: Path, via_proxy: bool) -> None:
    dead_api, dead_reg = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    real_reg = f"127.0.0.1:{cloud.reg_port}"
    serve_endpoints(cloud, [dead_api, cloud.endpoint], [dead_reg, real_reg])
    proxy = None
    if via_proxy:
        ports = [int(e.rpartition(":")[2]) for e in (dead_api, dead_reg, cloud.endpoint, real_reg)]
        proxy = TinyProxy(cloud.procs, tmp_path, ports).start()
    # registration (both servers), the provider's sync (the VM reaches the vault) and the
    # protection commands it relays all happen in here
    p = protect(cloud, tmp_path, proxy=proxy.url if proxy else "")
    key = json.loads(p.site.key.read_text())
    assert key["endpoints"] == {"api": [dead_api, cloud.endpoint], "registration": [dead_reg, real_reg]}
    reg = json.loads((tmp_path / "hv01" / "registration.json").read_text())
    assert reg["endpoints"] == key["endpoints"]
    res = p.once()
    assert res["point_id"] and res["chunks_sent"] > 0
    wait_on(p.site, cloud.endpoint)
    out = run([str(BIN / "asr-agent"), "status", "--config", str(tmp_path / "hv01.toml")], env=cloud.env())
    assert out.returncode == 0 and f"{cloud.endpoint} (endpoint 2 of 2)" in out.stdout, out.stdout + out.stderr
    # the operator's asr takes several endpoints too, and uses the first that accepts a connection
    both = f"{dead_api},{cloud.endpoint}"
    assert [v["name"] for v in cloud.asr_json("vault", "list", "--endpoint", both)] == ["contoso"]
    bad = cloud.asr("vault", "list", "--endpoint", f"{cloud.endpoint},nope", check=False)
    assert bad.returncode == 2 and "ASR-0002" in bad.stderr and "'nope'" in bad.stderr, bad.stderr
    if proxy is not None:
        # the proxy was asked for the dead endpoints first, and carried the real traffic
        seen = proxy.connects()
        assert seen.index(dead_reg) < seen.index(real_reg), seen
        assert dead_api in seen and cloud.endpoint in seen, seen


def test_a_silent_first_endpoint_is_passed_over(cloud: Cloud, tmp_path: Path) -> None:
    # listens and never accepts: the kernel completes the TCP handshake, TLS never answers
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        quiet = f"127.0.0.1:{silent.getsockname()[1]}"
        serve_endpoints(cloud, [quiet, cloud.endpoint], [quiet, f"127.0.0.1:{cloud.reg_port}"])
        cloud.asr("vault", "create", "v", "--region", "japaneast")
        site = Site(cloud, tmp_path, "v")
        site.new_key()
        t0 = time.monotonic()
        res = site.register_provider()
        assert res.returncode == 0, res.stderr
        assert time.monotonic() - t0 < 25     # one connect wait (10 s) on the silent one, not 30 s
        site.start_provider()
        # gRPC gives up a connection attempt (TCP, TLS) after the channel's connect timeout
        # (asrchannel.tls.CONNECT_TIMEOUT_S, 10 s): UNAVAILABLE, which moves the link; the
        # heartbeat's deadline (10 s) moves it as soon
        wait_on(site, cloud.endpoint, 45, names=("prov1",))
        log = site.provider_proc.text()  # type: ignore[union-attr]
        assert "cloud endpoint not answering, moving on" in log and quiet in log, log
    finally:
        silent.close()


def test_a_front_endpoint_that_hangs_is_left_at_the_heartbeat_deadline(cloud: Cloud, tmp_path: Path) -> None:
    front = Forwarder(cloud.port)
    try:
        serve_endpoints(cloud, [front.endpoint, cloud.endpoint], [f"127.0.0.1:{cloud.reg_port}"])
        cloud.asr("vault", "create", "v", "--region", "japaneast")
        site = Site(cloud, tmp_path, "v")
        site.new_key()
        assert site.register_provider().returncode == 0
        site.start_provider()
        wait_on(site, front.endpoint, names=("prov1",))
        front.hold()       # connections stay open, nothing answers: only a deadline notices
        wait_on(site, cloud.endpoint, 45, names=("prov1",))
        log = site.provider_proc.text()  # type: ignore[union-attr]
        assert "cloud endpoint not answering, moving on" in log and "DEADLINE_EXCEEDED" in log, log
    finally:
        front.stop()


@pytest.mark.parametrize("via_proxy", [False, True], ids=["direct", "tinyproxy"])
def test_clients_move_on_when_their_front_endpoint_goes_away(cloud: Cloud, tmp_path: Path, via_proxy: bool) -> None:
    os.environ["ASR_REPL_SEGMENT_BYTES"] = str(MiB)   # the completed calls' chunks are durable
    front = Forwarder(cloud.port)
    try:
        proxy = TinyProxy(cloud.procs, tmp_path, [front.port, cloud.port, cloud.reg_port]).start() if via_proxy \
            else None
        _front_goes_away(cloud, tmp_path, front, proxy)
    finally:
        front.stop()
        os.environ.pop("ASR_REPL_SEGMENT_BYTES", None)


def _front_goes_away(cloud: Cloud, tmp_path: Path, front: Forwarder, proxy: TinyProxy | None) -> None:
    serve_endpoints(cloud, [front.endpoint, cloud.endpoint], [f"127.0.0.1:{cloud.reg_port}"])
    p = protect(cloud, tmp_path, os_size=16 * MiB, fill=False, proxy=proxy.url if proxy else "")
    wait_on(p.site, front.endpoint)
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    for off in range(0, 12 * MiB, MiB):                      # incompressible content
        hv.write("vm1", 0, off, os.urandom(MiB))
    hv.close()
    total_chunks = 12 * MiB // 65536

    # the initial copy stops inside its upload (after 3 messages of 2 MiB: at least two 1 MiB
    # calls are durable), the front goes away there, and the copy goes on
    gate = tmp_path / "gate"
    proc = p.start_paused_once(3, gate)
    assert front.bytes_between(0, front.now() + 1) > 2 * MiB   # the upload went through the front
    front.stop()
    (gate / "go").touch()
    assert proc.popen.wait(120) == 0, proc.text()
    res = json.loads([line for line in proc.text().splitlines() if line.startswith('{"vm_id"')][-1])
    assert 0 < res["chunks_sent"] < total_chunks, res            # resumed, not copied again from zero
    assert "replication cycle moves to the next cloud endpoint" in proc.text()
    assert len(p.points()) == 1

    # the daemons' links come back on the cloud's own address; sync and replication go on there
    wait_on(p.site, cloud.endpoint, 60)
    assert "cloud endpoint not answering, moving on" in p.site.provider_proc.text()  # type: ignore[union-attr]
    hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
    hv.write("vm1", 0, 0, os.urandom(65536))
    hv.close()
    again = p.once()
    assert again["chunks_sent"] == 1, again
    assert len(p.points()) == 2
    if proxy is not None:
        # every connection went through the proxy: to the front first, then to the cloud itself
        seen = proxy.connects()
        assert seen.index(front.endpoint) < seen.index(cloud.endpoint), seen


def test_a_site_on_a_long_link_registers_syncs_and_replicates(cloud: Cloud, tmp_path: Path) -> None:
    """Every connection of the site crosses a link of 0.6 s round trip (a forwarder that holds
    each byte 0.3 s each way). A connection's TCP, TLS and HTTP/2 settings take about four
    round trips there: more than the 0.5 s that gRPC once gave each attempt (its minimum
    connect timeout was the reconnect backoff's 0.5 s), so registration failed at once, and so
    did a CI run whose tinyproxy was slow under load. Registration, the provider's sync, the
    operator's asr and a replication cycle all complete now (asrchannel.tls.CONNECT_TIMEOUT_S)."""
    api, reg = Forwarder(cloud.port, one_way_delay=0.3), Forwarder(cloud.reg_port, one_way_delay=0.3)
    try:
        serve_endpoints(cloud, [api.endpoint], [reg.endpoint])
        p = protect(cloud, tmp_path)             # two registrations, sync, protection commands
        res = p.once()
        assert res["point_id"] and res["chunks_sent"] > 0, res
        assert [v["name"] for v in cloud.asr_json("vault", "list", "--endpoint", api.endpoint)] == ["contoso"]
        assert api.bytes_between(0, api.now() + 1) > 0 and reg.bytes_between(0, reg.now() + 1) > 0
    finally:
        api.stop()
        reg.stop()


def test_servers_registered_before_a_new_endpoint_adopt_the_cloud_list(cloud: Cloud, tmp_path: Path) -> None:
    """A second cloud service added after the site registered: the cloud's configured endpoints
    reach the provider and the agent in their heartbeats, registration.json records them (a
    restart keeps them), and when the first service goes away they move to the second one
    without registering again."""
    p = protect(cloud, tmp_path)
    states = {name: p.site.root / name for name in ("prov1", "hv01")}
    for d in states.values():
        assert json.loads((d / "registration.json").read_text())["endpoints"]["api"] == [cloud.endpoint]
    b = cloud.clone(tmp_path / "cloud-b")
    api = [cloud.endpoint, b.endpoint]
    reg = [f"127.0.0.1:{cloud.reg_port}", f"127.0.0.1:{b.reg_port}"]
    toml_b = b.data_dir / "cloudsvc.toml"          # both services announce the same list
    text = re.sub(r"(?m)^endpoints = .*$", f"endpoints = {json.dumps(api)}", toml_b.read_text())
    toml_b.write_text(re.sub(r"(?m)^registration_endpoints = .*$", f"registration_endpoints = {json.dumps(reg)}",
                             text))
    b.start()
    serve_endpoints(cloud, api, reg)

    def adopted() -> bool:
        docs = [json.loads((d / "registration.json").read_text()) for d in states.values()]
        return all(doc["endpoints"] == {"api": api, "registration": reg} for doc in docs)

    wait_for(adopted, 60, what="the provider and the agent to record the cloud's endpoints")
    for d in states.values():
        assert os.stat(d / "registration.json").st_mode & 0o777 == 0o600
    # logged once recorded (registration.link), so a moment after registration.json changed
    wait_for(lambda: "cloud endpoints changed" in p.site.provider_proc.text(), 30,  # type: ignore[union-attr]
             what="the provider to log the new endpoints")
    cloud.stop()                                     # the first service goes away
    wait_on(p.site, b.endpoint, 60)
    res = p.once()                                   # and replication goes on through the second
    assert res["point_id"]
    assert [x["point_id"] for x in b.asr_json("point", "list", "vm1", "--vault", "contoso")][-1] == res["point_id"]
