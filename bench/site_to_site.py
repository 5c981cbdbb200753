"""Issue 11: the site-to-site data path (primary agent -> recovery agent) beside the vault
path (agent -> cloud service), on the same generated image, in one run. Figures, not a test.

Each path gets its own cloud service and hosts in a temp dir (the vault path's are stopped
before the direct path starts, so the two never share the cores). The image is
replication_scale.py's recipe (a dynamic VHDX with 1 MiB blocks, written through the local
hypervisor's guest path, half random and half text-like 1 MiB extents, plus an empty 4 MiB
data VHD), with seeded random data so both paths get byte-identical disks (checked with
qemu-img compare at the end). Per path: the initial copy and a 1%-of-blocks incremental as
``python -m agent.replication once`` processes (time, MB/s of allocated data, bytes sent,
CPU seconds and peak RSS of the cycle process and of the receiving daemon). The direct path
also reports the recovery host's replica-disk apply (from its "replica disks applied" log
line; it runs after CommitPoint answered) and how long after the cycle's end the replica disks
held the point (``applied.json`` polled; the incremental starts only then, so it does not
share the cores with the initial copy's apply). Correctness: the replica disks (and
the vault's exported last point) equal the source. Peer in the same run: ``qemu-img convert``
of the source into a new dynamic VHDX plus fsync (the floor for writing the replica disk).

    .venv/bin/python bench/site_to_site.py [--gib 1] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.hypervisor import LocalHypervisor  # noqa: E402
from asrpb import control_pb2, inventory_pb2  # noqa: E402
from durablefile import write_atomic  # noqa: E402
from registration.state import load as load_identity  # noqa: E402
from tests.controlplane.sitefix import agent_vm  # noqa: E402
from tests.harness import BIN, Cloud, Proc, Procs, Site, free_port, wait_for  # noqa: E402
from tests.replication.fixture import MiB, later_start, protect, qemu  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replication_scale import cpu_seconds, status_kib  # noqa: E402

BLOCK = 65536
DATA_SIZE = 4 * MiB
TEXT = (b"log line: the quick brown fox jumps over the lazy dog %d\n" * 20000)[:MiB]


def fill(hv: LocalHypervisor, size: int, seed: int) -> None:
    """replication_scale.py's content, with seeded random data (the same disk on both paths)."""
    rng = random.Random(seed)
    for off in range(0, size, MiB):
        hv.write("vm1", 0, off, rng.randbytes(MiB) if (off // MiB) % 2 else TEXT)


def change(hv: LocalHypervisor, seed: int, nblocks: int, fraction: float) -> int:
    rng = random.Random(seed)
    picked = rng.sample(range(nblocks), int(nblocks * fraction))
    for b in picked:
        hv.write("vm1", 0, b * BLOCK, rng.randbytes(BLOCK))
    return len(picked)


def once(cloud: Cloud, config: Path, vm_id: str, server_pid: int) -> dict[str, Any]:
    """One cycle process; its VmHWM polled while it runs, its rusage taken when it exits, and
    the receiving daemon's CPU seconds over the cycle."""
    server_cpu = cpu_seconds(server_pid)
    cloud_cpu = cpu_seconds(cloud.proc.popen.pid) if cloud.proc is not None else 0.0
    proc = subprocess.Popen([sys.executable, "-m", "agent.replication", "once", vm_id, "--config", str(config)],
                            env=cloud.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    hwm = 0
    try:
        while True:
            try:
                hwm = max(hwm, status_kib(proc.pid, "VmHWM"))
            except (OSError, ValueError):
                pass
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.01)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"cycle failed ({proc.returncode}): {err[-3000:]}{out[-1000:]}")
    res = dict(json.loads(out.strip().splitlines()[-1]))
    res["agent_vmhwm_mib"] = round(max(hwm, ru.ru_maxrss) / 1024, 1)
    res["agent_cpu_s"] = round(ru.ru_utime + ru.ru_stime, 2)
    res["server_cpu_s"] = round(cpu_seconds(server_pid) - server_cpu, 2)
    if cloud.proc is not None:
        res["cloud_cpu_s"] = round(cpu_seconds(cloud.proc.popen.pid) - cloud_cpu, 2)
    return res


def summary(res: dict[str, Any], allocated: int) -> dict[str, Any]:
    return {"point_id": res["point_id"], "seconds": round(res["seconds"], 3),
            "MBps": round(allocated / res["seconds"] / 1e6, 1),
            "bytes_sent": res["bytes_sent"], "blocks_changed": res["blocks_changed"], "modes": res["modes"],
            "agent_cpu_s": res["agent_cpu_s"], "server_cpu_s": res["server_cpu_s"],
            "cloud_cpu_s": res.get("cloud_cpu_s", 0.0), "agent_vmhwm_mib": res["agent_vmhwm_mib"],
            "phases_s": {k: round(v, 3) for k, v in res.get("phases", {}).items()}}


def compare(a: Path, fmt_a: str, b: Path, fmt_b: str) -> str:
    r = subprocess.run(["qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
                       capture_output=True, text=True, check=False)
    return "identical" if r.returncode == 0 else f"DIFFERENT: {r.stdout.strip()} {r.stderr.strip()}"


def vault_path(root: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    procs = Procs(root)
    out: dict[str, Any] = {}
    try:
        cloud = Cloud(procs, root / "cloud").start()
        assert cloud.proc is not None
        cpid = cloud.proc.popen.pid
        p = protect(cloud, root, os_size=size, fill=False, retention_hours=24)
        hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
        fill(hv, size, args.seed)
        out["server_rss_before_mib"] = round(status_kib(cpid, "VmRSS") / 1024, 1)
        out["initial"] = summary(once(cloud, p.config, p.vm_id, cpid), size)
        n = change(hv, args.seed + 1, size // BLOCK, args.changed)
        res = once(cloud, p.config, p.vm_id, cpid)
        out["incremental"] = summary(res, n * BLOCK)
        out["server_vmhwm_mib"] = round(status_kib(cpid, "VmHWM") / 1024, 1)
        hv.close()
        exported = p.export(res["point_id"], 0, root / "export-disk0.raw")
        out["check"] = compare(exported, "raw", p.disks[0][0], "vhdx")
        out["source"] = str(p.disks[0][0])
    finally:
        procs.stop_all()
    return out


def start_agent(procs: Procs, cloud: Cloud, root: Path, host: str) -> Proc:
    cmds = root / f"cmds-{host}"
    cmds.mkdir(exist_ok=True)
    return procs.start(f"agent-{host}", [str(BIN / "asr-agent"), "run", "--config", str(root / f"{host}.toml")],
                       env=cloud.env(ASR_TEST_COMMAND_DIR=str(cmds)))


def command(root: Path, agent: Proc, host: str, cid: str, **body: Any) -> None:
    """A pairing command through the agent's test command directory (as tests/sitetosite/test_data_path.py
    does: the cloud cannot pair hosts yet)."""
    cmd = control_pb2.Command(id=cid, epoch=1, **body)
    write_atomic(root / f"cmds-{host}" / f"{cid}.cmd", cmd.SerializeToString())
    path = root / f"cmds-{host}" / f"{cid}.result"

    def done() -> bool:
        if not agent.alive():
            raise RuntimeError(f"agent {host} exited: {agent.text()[-3000:]}")
        return path.exists()

    wait_for(done, 60, what=f"command {cid} on {host}")
    got = control_pb2.CommandResult.FromString(path.read_bytes())
    if not got.ok:
        raise RuntimeError(f"{cid} on {host}: {got.error_message}")


APPLIED = re.compile(r'replica disks applied.*?how["=:\s]+"?(\w+).*?seconds["=:\s]+([0-9.]+)')


def applies(log: Path) -> list[tuple[str, float]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        m = APPLIED.search(line)
        if m:
            found.append((m.group(1), float(m.group(2))))
    return found


def direct_path(root: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    procs = Procs(root)
    out: dict[str, Any] = {}
    try:
        cloud = Cloud(procs, root / "cloud").start()
        cloud.asr("vault", "create", "contoso", "--region", "japaneast")
        cloud.asr("storage", "create", "store1", "--vault", "contoso", "--region", "japaneast")
        site = Site(cloud, root, "contoso")
        site.new_key()
        for host, extra in (("hv01", ()), ("hv02", ("--address", "127.0.0.1"))):
            res = site.register_agent(host, *extra)
            assert res.returncode == 0, res.stderr
        address = f"127.0.0.1:{free_port()}"
        site.agent_config("hv01")
        site.agent_config("hv02", replica_listen=address)
        vault_id = load_identity(str(root / "hv01")).vault_id
        # the disks exactly as fixture.protect makes them
        d = root / "hv01" / "disks"
        d.mkdir(parents=True)
        os_disk, data_disk = d / "vm1-os.vhdx", d / "vm1-data.vhd"
        qemu("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", str(os_disk),
             str(size))
        qemu("qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on", str(data_disk),
             str(DATA_SIZE))
        res = agent_vm(site, "hv01", "create", "vm1", "--os-disk", str(os_disk), "--data-disk", str(data_disk),
                       "--os", "windows-server-2019", "--json")
        assert res.returncode == 0, res.stderr
        vm_id = json.loads(res.stdout)["vm_id"]
        assert agent_vm(site, "hv01", "start", "vm1").returncode == 0
        hv01 = start_agent(procs, cloud, root, "hv01")
        hv02 = start_agent(procs, cloud, root, "hv02")
        wait_for(lambda: b"serving replicas" in hv02.log.read_bytes() or not hv02.alive(), 60,
                 what="hv02 serving replicas")
        policy = inventory_pb2.Policy(copy_frequency_seconds=30, retention_hours=24, start=later_start(),
                                      target_cloud="silver")
        disks = [inventory_pb2.Disk(format="vhdx", virtual_size=size, os_disk=True),
                 inventory_pb2.Disk(format="vhd", virtual_size=DATA_SIZE)]
        command(root, hv02, "hv02", "accept", accept_replica=control_pb2.AcceptReplica(
            host="hv02", vm_id=vm_id, vm_name="vm1", source_host="hv01", pairing_id="pr-bench", policy=policy,
            vault_id=vault_id, disks=disks))
        target = control_pb2.ReplicaTarget(recovery_host="hv02", address=address, pairing_id="pr-bench")
        command(root, hv01, "hv01", "enable", enable_replication=control_pb2.EnableReplication(
            host="hv01", vm_id=vm_id, vm_name="vm1", policy=policy, vault_id=vault_id, replica_target=target))
        hv = LocalHypervisor(str(root / "hv01" / "vms"))
        fill(hv, size, args.seed)
        spid = hv02.popen.pid
        out["server_rss_before_mib"] = round(status_kib(spid, "VmRSS") / 1024, 1)
        state = root / "hv02" / "replicas" / vm_id / "applied.json"

        def disks_current(point_id: str) -> float:
            """Seconds from now until hv02's replica disks hold ``point_id`` (the apply runs
            after CommitPoint answered)."""
            t = time.monotonic()

            def held() -> bool:
                try:
                    st = json.loads(state.read_text())
                except (FileNotFoundError, ValueError):
                    return False
                return bool(st.get("point_id") == point_id and not st.get("applying"))

            wait_for(held, 300, what=f"hv02's disks to hold {point_id}")
            return round(time.monotonic() - t, 3)

        out["initial"] = summary(once(cloud, root / "hv01.toml", vm_id, spid), size)
        out["initial"]["disks_current_after_s"] = disks_current(out["initial"]["point_id"])
        n = change(hv, args.seed + 1, size // BLOCK, args.changed)
        out["incremental"] = summary(once(cloud, root / "hv01.toml", vm_id, spid), n * BLOCK)
        out["incremental"]["disks_current_after_s"] = disks_current(out["incremental"]["point_id"])
        out["server_vmhwm_mib"] = round(status_kib(spid, "VmHWM") / 1024, 1)
        hv.close()
        # the apply's log line follows applied.json; poll in case the log lags
        found = wait_for(lambda: (a := applies(hv02.log)) and len(a) >= 2 and a, 30, what="apply log lines")
        out["apply"] = [{"how": how, "seconds": s} for how, s in found]
        replica = root / "hv02" / "replicas" / vm_id / "disks"
        out["check"] = compare(replica / "disk0.vhdx", "vhdx", os_disk, "vhdx")
        out["check_data_disk"] = compare(replica / "disk1.vhdx", "vhdx", data_disk, "vpc")
        out["replica_file_bytes"] = (replica / "disk0.vhdx").stat().st_size
        out["source"] = str(os_disk)
    finally:
        procs.stop_all()
    return out


def peer_convert(src: Path, dst: Path) -> float:
    """qemu-img writing the same content into a new dynamic VHDX, made durable: the floor of
    the replica's full apply (its default block size, as the replica disks are made)."""
    t = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "vhdx", "-o", "subformat=dynamic", str(src), str(dst)],
                   check=True, capture_output=True)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - t


def table(v: dict[str, Any], d: dict[str, Any], peer_s: float, size: int) -> str:
    rows: list[tuple[str, str, str]] = []

    def row(name: str, a: Any, b: Any) -> None:
        rows.append((name, str(a), str(b)))

    for phase in ("initial", "incremental"):
        a, b = v[phase], d[phase]
        label = "initial copy" if phase == "initial" else "1% incremental"
        row(f"{label}: seconds", a["seconds"], b["seconds"])
        if phase == "initial":
            row(f"{label}: MB/s of allocated data", a["MBps"], b["MBps"])
        row(f"{label}: blocks / MB sent", f"{a['blocks_changed']} / {a['bytes_sent'] / 1e6:.1f}",
            f"{b['blocks_changed']} / {b['bytes_sent'] / 1e6:.1f}")
        row(f"{label}: commit phase s", a["phases_s"].get("commit", "-"), b["phases_s"].get("commit", "-"))
        row(f"{label}: CPU-s primary cycle / receiver", f"{a['agent_cpu_s']} / {a['server_cpu_s']}",
            f"{b['agent_cpu_s']} / {b['server_cpu_s']}")
    apply = {a["how"]: a["seconds"] for a in d["apply"]}
    row("replica disk apply, initial (full) s", "-", apply.get("full", "-"))
    row("replica disk apply, incremental s", "-", apply.get("incremental", "-"))
    row("replica disks hold the point, s after the cycle (initial / incr.)", "-",
        f"{d['initial']['disks_current_after_s']} / {d['incremental']['disks_current_after_s']}")
    row("peak RSS primary cycle MiB", max(v["initial"]["agent_vmhwm_mib"], v["incremental"]["agent_vmhwm_mib"]),
        max(d["initial"]["agent_vmhwm_mib"], d["incremental"]["agent_vmhwm_mib"]))
    row("peak RSS receiver MiB (before -> VmHWM)", f"{v['server_rss_before_mib']} -> {v['server_vmhwm_mib']}",
        f"{d['server_rss_before_mib']} -> {d['server_vmhwm_mib']}")
    row("check: copy equals source", v["check"], f"{d['check']}, data disk {d['check_data_disk']}")
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  {'vault (agent -> cloudsvc)':<28}  direct (hv01 -> hv02)"]
    lines += [f"{n:<{width}}  {a:<28}  {b}" for n, a, b in rows]
    lines.append(f"peer: qemu-img convert into a new dynamic VHDX + fsync: {peer_s:.2f} s "
                 f"({size / peer_s / 1e6:.0f} MB/s)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    size = int(args.gib * 1024) * MiB
    root = Path(tempfile.mkdtemp(prefix="bench-s2s-"))
    try:
        (root / "vault").mkdir()
        (root / "direct").mkdir()
        v = vault_path(root / "vault", size, args)
        d = direct_path(root / "direct", size, args)
        same = compare(Path(v["source"]), "vhdx", Path(d["source"]), "vhdx")
        peer_s = peer_convert(Path(d["source"]), root / "peer.vhdx")
        machine = f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}"
        print(json.dumps({"machine": machine, "size_mib": size // MiB, "sources_identical": same, "vault": v,
                          "direct": d, "peer_qemu_img_convert_s": round(peer_s, 3)}, indent=2))
        print()
        print(f"{machine}; {size // MiB} MiB disk, sources on both paths: {same}")
        print(table(v, d, peer_s, size))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
