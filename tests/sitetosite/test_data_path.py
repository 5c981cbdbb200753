"""Issue 11 (site-to-site), the data path: a primary agent ships a VM straight to a recovery
agent of the same vault over TLS; the vault stores no chunk of it.

Real processes: the cloud service, three agents (hv01 the primary, behind tinyproxy; hv02
the recovery host; hv03 a third agent of the vault) and the primary's cycles as ``python -m agent.replication
once`` processes. The cloud cannot pair VMs yet (the control part of issue 11 is another
branch), so the pairing commands (AcceptReplica, EnableReplication with a replica target) are
injected through the agents' test command directory (``ASR_TEST_COMMAND_DIR``,
agent/testcommands.py), which applies them exactly as the provider's would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.hypervisor import LocalHypervisor
from agent.replica.channel import ReplicaChannels
from asrclock import SystemClock
from asrerrors import AsrError, PermissionDenied
from asrpb import control_pb2, inventory_pb2, replication_pb2
from certs.identity import replica_server_name
from chunkfmt import decode_chunk
from cloudsvc.vaultstore import LocalDirBackend, VaultStore
from durablefile import write_atomic
from registration.state import load as load_identity
from tests.controlplane.sitefix import agent_vm
from tests.harness import BIN, Cloud, Proc, Site, free_port, run, wait_for
from tests.proxies import TinyProxy
from tests.replication.fixture import MiB, later_start, qemu

SEGMENT = 1 * MiB   # one PutChunks call per 2 MiB message (see tests/replication/test_kill9.py)
OS_SIZE = 16 * MiB
DATA_SIZE = 4 * MiB


class S2S:
    def __init__(self, cloud: Cloud, root: Path) -> None:
        self.cloud = cloud
        self.root = root
        cloud.asr("vault", "create", "contoso", "--region", "japaneast")
        cloud.asr("storage", "create", "store1", "--vault", "contoso", "--region", "japaneast")
        self.site = Site(cloud, root, "contoso")
        self.site.new_key()
        for host, extra in (("hv01", ()), ("hv02", ("--address", "127.0.0.1")), ("hv03", ("--address", "127.0.0.1"))):
            res = self.site.register_agent(host, *extra)
            assert res.returncode == 0, res.stderr
        self.replica_port = free_port()
        self.replica_address = f"127.0.0.1:{self.replica_port}"
        # the primary reaches the cloud and the recovery host only through its proxy
        self.proxy = TinyProxy(cloud.procs, root, allow_ports=[cloud.port, self.replica_port]).start()
        self.site.agent_config("hv01", proxy=self.proxy.url)
        self.site.agent_config("hv02", replica_listen=self.replica_address)
        self.site.agent_config("hv03", replica_listen=f"127.0.0.1:{free_port()}")
        self.vault_id = load_identity(str(root / "hv01")).vault_id
        self.agents: dict[str, Proc] = {}
        self._ids = 0

    def start_agent(self, host: str) -> Proc:
        cmds = self.root / f"cmds-{host}"
        cmds.mkdir(exist_ok=True)
        p = self.cloud.procs.start(f"agent-{host}", [str(BIN / "asr-agent"), "run", "--config",
                                                    str(self.root / f"{host}.toml")],
                                   env=self.cloud.env(ASR_TEST_COMMAND_DIR=str(cmds)))
        self.agents[host] = p
        return p

    def command(self, host: str, epoch: int = 1, **body: Any) -> control_pb2.CommandResult:
        self._ids += 1
        cmd = control_pb2.Command(id=f"t-{self._ids}", epoch=epoch, **body)
        d = self.root / f"cmds-{host}"
        write_atomic(d / f"{cmd.id}.cmd", cmd.SerializeToString())
        path = d / f"{cmd.id}.result"

        def done() -> bool:
            if not self.agents[host].alive():
                raise AssertionError(f"agent {host} exited: {self.agents[host].text()}")
            return path.exists()

        wait_for(done, 60, what=f"command {cmd.id} on {host}")
        return control_pb2.CommandResult.FromString(path.read_bytes())

    def once(self, vm_id: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        res = run([sys.executable, "-m", "agent.replication", "once", vm_id, "--config", str(self.root / "hv01.toml")],
                  env=self.cloud.env(ASR_REPL_SEGMENT_BYTES=str(SEGMENT), **(env or {})), timeout=300)
        assert res.returncode == 0, res.stderr + res.stdout
        return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def compare(a: Path, fmt_a: str, b: Path, fmt_b: str) -> None:
    res = subprocess.run(["qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{a} != {b}: {res.stdout}{res.stderr}"


def raw_copy(src: Path, fmt: str, out: Path) -> Path:
    qemu("qemu-img", "convert", "-f", fmt, "-O", "raw", str(src), str(out))
    return out


def export_point(replica_dir: Path, point_id: str, disk: int, size: int, out: Path) -> Path:
    """A point of the replica store as a raw file, read with the vault store's own reader."""
    st = VaultStore(LocalDirBackend(replica_dir), str(replica_dir / "index.db"), SystemClock())
    try:
        with open(out, "wb") as f:
            f.truncate(size)
            for block, chunk, frame in st.read_frames(point_id, disk):
                if frame is not None:
                    f.seek(block * 65536)
                    f.write(decode_chunk(frame, None, chunk=chunk))
    finally:
        st.close()
    return out


def refused(rpc: Any, vm_id: str) -> AsrError:
    with pytest.raises(AsrError) as info:
        rpc("BeginCycle", replication_pb2.BeginCycleRequest(vm_id=vm_id, epoch=1), timeout=10)
    return info.value


def test_site_to_site_ships_host_to_host(cloud: Cloud, tmp_path: Path) -> None:
    s = S2S(cloud, tmp_path)
    d = tmp_path / "hv01" / "disks"
    d.mkdir(parents=True)
    os_disk, data_disk = d / "vm1-os.vhdx", d / "vm1-data.vhd"
    qemu("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", str(os_disk), str(OS_SIZE))
    qemu("qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on", str(data_disk),
         str(DATA_SIZE))
    qemu("qemu-io", "-f", "vhdx", "-c", "write -P 0xab 0 1M", "-c", f"write -P 0x5c {OS_SIZE - 65536} 64k",
         str(os_disk))
    qemu("qemu-io", "-f", "vpc", "-c", "write -P 0xcd 512k 256k", str(data_disk))
    res = agent_vm(s.site, "hv01", "create", "vm1", "--os-disk", str(os_disk), "--data-disk", str(data_disk),
                   "--os", "windows-server-2019", "--json")
    assert res.returncode == 0, res.stderr
    vm_id = json.loads(res.stdout)["vm_id"]
    assert agent_vm(s.site, "hv01", "start", "vm1").returncode == 0
    for host in ("hv01", "hv02"):
        s.start_agent(host)

    pairing = "pr-0001"
    # retention keeps one point per copy interval in the first hour: 1 s keeps each of this
    # test's points (seconds apart); the schedule itself stays idle (start is hours away)
    policy = inventory_pb2.Policy(copy_frequency_seconds=1, retention_hours=2, start=later_start(),
                                  target_cloud="silver")
    disks = [inventory_pb2.Disk(format="vhdx", virtual_size=OS_SIZE, os_disk=True),
             inventory_pb2.Disk(format="vhd", virtual_size=DATA_SIZE)]
    accept = control_pb2.AcceptReplica(host="hv02", vm_id=vm_id, vm_name="vm1", source_host="hv01",
                                       pairing_id=pairing, policy=policy, vault_id=s.vault_id, disks=disks)
    got = s.command("hv01", accept_replica=accept)             # hv01 holds no replicas
    assert not got.ok and got.error_code == "ASR-0042" and "replica_listen is not set" in got.error_message, got
    got = s.command("hv02", accept_replica=accept)
    assert got.ok, got.error_message
    again = s.command("hv02", accept_replica=accept)           # at-least-once delivery: harmless
    assert again.ok and "replacing" not in again.output
    target = control_pb2.ReplicaTarget(recovery_host="hv02", address=s.replica_address, pairing_id=pairing)
    got = s.command("hv01", enable_replication=control_pb2.EnableReplication(
        host="hv01", vm_id=vm_id, vm_name="vm1", policy=policy, vault_id=s.vault_id, replica_target=target))
    assert got.ok, got.error_message

    replica = tmp_path / "hv02" / "replicas" / vm_id
    sources = [(os_disk, "vhdx"), (data_disk, "vpc")]

    def applied(point_id: str) -> bool:
        # CommitPoint answers once the point is durable and recorded; the disks follow
        try:
            st = json.loads((replica / "applied.json").read_text())
        except (FileNotFoundError, ValueError):
            return False
        return bool(st.get("point_id") == point_id and not st.get("applying"))

    def replica_equals_source(point_id: str) -> None:
        wait_for(lambda: applied(point_id), 120, what=f"hv02's replica disks to hold {point_id}")
        for i, (src, fmt) in enumerate(sources):
            compare(replica / "disks" / f"disk{i}.vhdx", "vhdx", src, fmt)

    # 1. the first copy goes to hv02; its replica disks equal the source
    first = s.once(vm_id)
    assert first["modes"] == ["initial", "initial"], first
    replica_equals_source(first["point_id"])
    assert s.replica_address in s.proxy.connects()       # through the proxy, by its own log
    at_first = [raw_copy(src, fmt, tmp_path / f"p1-disk{i}.raw") for i, (src, fmt) in enumerate(sources)]

    # 2. guest writes, then an incremental cycle ships only them
    for args in (("--disk", "0", "--offset", str(4 * MiB), "--length", str(MiB), "--pattern", "0x42"),
                 ("--disk", "1", "--offset", "0", "--length", str(128 * 1024), "--pattern", "0x77")):
        res = agent_vm(s.site, "hv01", "write", "vm1", *args)
        assert res.returncode == 0, res.stderr
    second = s.once(vm_id)
    assert second["modes"] == ["incremental", "incremental"], second
    assert second["blocks_changed"] == 16 + 2, second
    replica_equals_source(second["point_id"])
    points = json.loads((replica / "points.json").read_text())
    assert [p["point_id"] for p in points] == [first["point_id"], second["point_id"]]
    assert {p["epoch"] for p in points} == {1}

    # 3. a third agent of the vault is refused, and so is the source with another pairing id
    hv03 = ReplicaChannels(load_identity(str(tmp_path / "hv03")), None)
    hv01 = ReplicaChannels(load_identity(str(tmp_path / "hv01")), None)
    try:
        err = refused(hv03.rpc("hv02", s.replica_address, pairing), vm_id)
        assert isinstance(err, PermissionDenied) and err.code == "ASR-0032", err
        assert "'hv03' may not ship VM vm1" in err.message, err.message
        err = refused(hv01.rpc("hv02", s.replica_address, "pr-forged"), vm_id)
        assert isinstance(err, PermissionDenied) and err.code == "ASR-0032", err
        assert "is not the pairing of VM vm1" in err.message, err.message
        # a server that is not the recovery host the vault named fails the name check
        err = refused(hv01.rpc("hv03", s.replica_address, pairing), vm_id)
        assert err.code != "ASR-0032", err
    finally:
        hv03.close()
        hv01.close()
    # an agent of another vault does not complete the handshake (the vault CA is the only anchor)
    cloud.asr("vault", "create", "fabrikam", "--region", "japaneast")
    other = Site(cloud, tmp_path / "other", "fabrikam")
    (tmp_path / "other").mkdir()
    other.new_key()
    assert other.register_agent("hv02").returncode == 0
    foreign = ReplicaChannels(load_identity(str(tmp_path / "other" / "hv02")), None)
    try:
        err = refused(foreign.rpc("hv02", s.replica_address, pairing), vm_id)
        assert err.code != "ASR-0032" and "handshake" in err.message.lower() + " ".join(err.details).lower(), err
    finally:
        foreign.close()
    # the name primaries require of a recovery host is the registrar's alone: a provider (or an
    # agent) of the vault cannot claim it with --address
    res = other.register_provider("impostor", "--address", replica_server_name("hv02"))
    assert res.returncode != 0 and "is reserved" in res.stderr, res.stderr

    # 4. kill -9 of the recovery agent inside an upload: the completed calls' chunks are kept
    # 8 MiB of incompressible guest writes (the guest write path: tracked): four 2 MiB messages
    hv = LocalHypervisor(str(tmp_path / "hv01" / "vms"))
    for off in range(6 * MiB, 14 * MiB, MiB):
        hv.write("vm1", 0, off, os.urandom(MiB))
    gate = tmp_path / "gate"
    gate.mkdir()
    proc = cloud.procs.start("repl-once", [sys.executable, "-m", "agent.replication", "once", vm_id, "--config",
                                           str(tmp_path / "hv01.toml")],
                             env=cloud.env(ASR_REPL_SEGMENT_BYTES=str(SEGMENT), ASR_TEST_UPLOAD_PAUSE=f"2:{gate}"))
    wait_for(lambda: (gate / "paused").exists() or not proc.alive(), 120, what="the upload to pause")
    assert (gate / "paused").exists(), proc.text()
    s.agents["hv02"].kill9()
    s.start_agent("hv02")
    (gate / "go").touch()
    proc.popen.wait(120)
    assert proc.popen.returncode != 0, proc.text()
    wait_for(lambda: b"serving replicas" in s.agents["hv02"].log.read_bytes(), 60, what="hv02 serving again")
    third = s.once(vm_id)
    # two of four messages were durable before the kill: the retry sends at most the rest
    assert third["bytes_sent"] < 6 * MiB, third
    assert third["modes"][0] == "incremental", third
    replica_equals_source(third["point_id"])
    points = json.loads((replica / "points.json").read_text())
    assert [p["point_id"] for p in points] == [first["point_id"], second["point_id"], third["point_id"]]

    # 5. released (data kept), the replica admits no more cycles; a repeated release is harmless
    release = control_pb2.ReleaseReplica(host="hv02", vm_id=vm_id, vm_name="vm1", pairing_id=pairing)
    for _ in range(2):
        got = s.command("hv02", release_replica=release)
        assert got.ok, got.error_message
    res = run([sys.executable, "-m", "agent.replication", "once", vm_id, "--config", str(tmp_path / "hv01.toml")],
              env=cloud.env(), timeout=300)
    assert res.returncode == 32 and "ASR-0032" in res.stderr, res.stderr

    # 6. an earlier point, read from the replica store, equals the source as it was then
    s.agents["hv02"].stop()
    for i, size in enumerate((OS_SIZE, DATA_SIZE)):
        out = export_point(replica, first["point_id"], i, size, tmp_path / f"export-p1-disk{i}.raw")
        compare(out, "raw", at_first[i], "raw")

    # 7. the vault holds no chunk of this VM, and heard about the replica only as metadata
    packs = [p for p in (tmp_path / "cloud").rglob("*") if p.is_file() and "packs" in p.parts]
    assert packs == []
    assert cloud.db_rows("recovery_points") == []
    # the pairing was injected, not made by the vault: its reports are refused (NotFound), nothing stored
    assert cloud.db_rows("replica_points") == [] and cloud.db_rows("replica_status") == []
