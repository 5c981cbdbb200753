"""The whole story on embedded defaults, narrated: every step is a real command.

    bash deploy/demo.sh [--data-dir DIR] [--keep]

Starts the cloud service, creates a vault with a storage account and a network, writes a
registration key, registers and runs a provider and an agent; creates a VM on real disk
images, protects it, lets it replicate, runs a test failover, a planned failover (after which
the on-premises copy is fenced and refuses to start) and a failback, judging every recovered
disk with qemu-img compare. Every daemon is stopped at the
end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
DAEMONS: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def sh(*argv: str, env: dict[str, str], show: bool = True) -> str:
    print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)
    res = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True)
    if show and res.stdout.strip():
        print(res.stdout.rstrip(), flush=True)
    if res.returncode != 0:
        print(res.stderr, file=sys.stderr)
        raise SystemExit(f"demo step failed: {' '.join(argv)} (exit {res.returncode})")
    return res.stdout


def refused(*argv: str, env: dict[str, str], code: int) -> None:
    """A command the product must refuse: show its error and check its exit code."""
    print("$ " + " ".join(shlex.quote(a) for a in argv) + f"   # refused, exit {code}", flush=True)
    res = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True)
    print(res.stderr.rstrip(), flush=True)
    if res.returncode != code:
        raise SystemExit(f"demo step failed: {' '.join(argv)} exited {res.returncode}, not {code}")


def daemon(log: Path, *argv: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    print("$ " + " ".join(shlex.quote(a) for a in argv) + f" &   # log: {log}", flush=True)
    with open(log, "wb") as f:
        p = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], stdout=f, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    DAEMONS.append(p)
    return p


def wait_for(what: str, pred: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def stop_all() -> None:
    for p in reversed(DAEMONS):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(DAEMONS):
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def link_state(state_dir: Path) -> str:
    try:
        return str(json.loads((state_dir / "status.json").read_text())["cloud"]["state"])
    except (OSError, ValueError, KeyError):
        return ""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", help="where to keep everything (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory afterwards")
    args = ap.parse_args()
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="asr-demo-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    try:
        return story(root, env)
    finally:
        stop_all()
        print(f"\nall daemons stopped; data in {root}" + ("" if args.keep or args.data_dir else " (removed)"))
        if not (args.keep or args.data_dir):
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def story(root: Path, env: dict[str, str]) -> int:
    api, reg, prov_port = free_port(), free_port(), free_port()
    step("1. The recovery site: initialise and start the cloud service")
    sh("asr-cloudsvc", "init", "--data-dir", str(root / "cloud"), "--listen", f"127.0.0.1:{api}",
       "--registration-listen", f"127.0.0.1:{reg}", env=env)
    env = {**env, "ASR_CREDENTIALS": str(root / "cloud" / "operator.json")}
    daemon(root / "cloudsvc.log", "asr-cloudsvc", "serve", "--data-dir", str(root / "cloud"), env=env)
    wait_for("the cloud service", lambda: subprocess.run(
        [str(BIN / "asr"), "region", "list"], env=env, capture_output=True).returncode == 0)

    step("2. A vault in Japan East, a geo-redundant storage account and a recovery network")
    sh("asr", "region", "list", env=env)
    sh("asr", "vault", "create", "contoso-dr", "--region", "japaneast", env=env)
    env["ASR_VAULT"] = "contoso-dr"
    sh("asr", "storage", "create", "contosostore", "--region", "japaneast", "--redundancy", "GRS", env=env)
    sh("asr", "network", "create", "recovery-net", "--region", "japaneast", "--address-space",
       "10.10.0.0/16", "--subnet", "default=10.10.1.0/24", env=env)

    step("3. The on-premises site: a registration key, the provider (beside VMM) and a host agent")
    key = root / "contoso-dr.key"
    sh("asr", "vault", "key", "contoso-dr", "--out", str(key), env=env)
    sh("asr-provider", "register", "--key-file", str(key), "--name", "vmm01", "--state-dir",
       str(root / "vmm01"), env=env)
    sh("asr-agent", "register", "--key-file", str(key), "--host", "hv01", "--provider",
       f"127.0.0.1:{prov_port}", "--provider-name", "vmm01", "--state-dir", str(root / "hv01"), env=env)
    (root / "vmm01.toml").write_text(
        f'state_dir = "{root / "vmm01"}"\nlisten = "127.0.0.1:{prov_port}"\nheartbeat_seconds = 2\n'
        '\n[[clouds]]\nname = "gold"\nhosts = ["hv01"]\nsync = true\n'
    )
    (root / "hv01.toml").write_text(
        f'state_dir = "{root / "hv01"}"\nvm_dir = "{root / "hv01" / "vms"}"\nheartbeat_seconds = 2\n'
    )
    daemon(root / "provider.log", "asr-provider", "run", "--config", str(root / "vmm01.toml"), env=env)
    daemon(root / "agent.log", "asr-agent", "run", "--config", str(root / "hv01.toml"), env=env)
    wait_for("provider and agent to connect", lambda: link_state(root / "vmm01") == "Connected"
             and link_state(root / "hv01") == "Connected")
    sh("asr", "server", "list", env=env)

    step("4. A VM on host hv01: a VHDX OS disk and a VHD data disk made by qemu-img, some data on them")
    disks = root / "hv01" / "disks"
    disks.mkdir(parents=True)
    os_disk, data_disk = disks / "web01-os.vhdx", disks / "web01-data.vhd"
    run_tool("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic", str(os_disk), "64M")
    run_tool("qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on", str(data_disk), "32M")
    run_tool("qemu-io", "-f", "vhdx", "-c", "write -P 0xab 1M 4M", str(os_disk))
    run_tool("qemu-io", "-f", "vpc", "-c", "write -P 0xcd 2M 1M", str(data_disk))
    # and 4 MiB of real files (Python's standard library): uniform patterns alone dedup to a
    # chunk each, and the first point's size would say nothing of compression
    run_tool("qemu-io", "-f", "vhdx", "-c", f"write -s {real_files(root / 'files.bin', 4 * 2**20)} 8M 4M", str(os_disk))
    agent_cfg = str(root / "hv01.toml")
    sh("asr-agent", "vm", "create", "web01", "--config", agent_cfg, "--os-disk", str(os_disk), "--data-disk",
       str(data_disk), "--os", "windows-server-2019", env=env)
    sh("asr-agent", "vm", "start", "web01", "--config", agent_cfg, env=env, show=False)
    wait_for("the provider to sync web01 to the vault", lambda: "web01" in subprocess.run(
        [str(BIN / "asr"), "vm", "list"], env=env, capture_output=True, text=True).stdout)
    sh("asr", "vm", "list", env=env)

    step("5. Protect the cloud (replication policy) and the VM; the agent replicates on its schedule")
    sh("asr", "cloud", "protect", "gold", "--storage", "contosostore", "--copy-frequency", "30s",
       "--retention-hours", "2", "--app-consistent-hours", "1", "--wait", env=env)
    sh("asr", "vm", "protect", "web01", "--wait", env=env)
    wait_for("the first recovery point", lambda: json.loads(subprocess.run(
        [str(BIN / "asr"), "point", "list", "web01", "--json"], env=env, capture_output=True,
        text=True).stdout or "[]"), timeout=120)
    sh("asr", "point", "list", "web01", env=env)
    sh("asr", "point", "verify", "web01", "latest", env=env)
    sh("asr", "vm", "show", "web01", env=env)

    step("6. Test failover into the recovery network; replication keeps running; then clean up")
    sh("asr", "failover", "test", "web01", "--network", "recovery-net", "--wait", env=env)
    rvms = json.loads(sh("asr", "recovered-vm", "list", "--json", env=env, show=False))
    sh("asr", "recovered-vm", "list", env=env)
    judge(rvms[0], [os_disk, data_disk], ["vhdx", "vpc"])
    sh("asr", "failover", "test-complete", "web01", "--wait", env=env)

    step("7. Planned failover: the VM is shut down, its last changes shipped, then started in the vault")
    sh("asr-agent", "vm", "write", "web01", "--config", agent_cfg, "--disk", "1", "--offset", "4194304",
       "--length", "65536", "--pattern", "239", env=env, show=False)
    sh("asr", "failover", "planned", "web01", "--wait", env=env)
    rvm = json.loads(sh("asr", "recovered-vm", "list", "--json", env=env, show=False))[0]
    judge(rvm, [os_disk, data_disk], ["vhdx", "vpc"])  # zero data loss: equal to the shut-down source
    sh("asr", "failover", "commit", "web01", "--wait", env=env)
    sh("asr", "vm", "show", "web01", env=env)
    # one active side: the on-premises copy is fenced until failback makes it active again
    refused("asr-agent", "vm", "start", "web01", "--config", agent_cfg, env=env, code=44)

    step("8. Failback: the recovered VM wrote new data; only changed blocks travel back to hv01")
    recovered_os = sorted(rvm["disks"], key=lambda d: d["index"])[0]["path"]
    run_tool("qemu-io", "-f", "vpc", "-c", "write -P 0x42 8M 128k", recovered_os)
    sh("asr", "failover", "planned", "web01", "--direction", "to-primary", "--wait", env=env)
    judge(rvm, [os_disk, data_disk], ["vhdx", "vpc"])  # on-premises disks now equal the recovered ones
    sh("asr", "failover", "commit", "web01", "--wait", env=env)
    sh("asr", "vm", "show", "web01", env=env)
    sh("asr", "job", "list", env=env)
    sh("asr", "billing", "report", "--month", time.strftime("%Y-%m", time.gmtime()), env=env)

    step("done: protected, replicated, test failover, planned failover, failback")
    return 0


def real_files(out: Path, size: int) -> Path:
    """``size`` bytes of this machine's files (Python's standard library), in ``out``."""
    parts, have = [], 0
    for path in sorted(Path(os.__file__).parent.glob("*.py")):
        data = path.read_bytes()
        parts.append(data)
        have += len(data)
        if have >= size:
            break
    out.write_bytes(b"".join(parts)[:size].ljust(size, b"\n"))
    return out


def run_tool(*argv: str) -> None:
    print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)
    subprocess.run(argv, check=True, capture_output=True)


def judge(rvm: dict[str, Any], sources: list[Path], formats: list[str]) -> None:
    """qemu-img compare: each recovered fixed VHD against the on-premises disk."""
    for disk, src, fmt in zip(sorted(rvm["disks"], key=lambda d: d["index"]), sources, formats, strict=True):
        argv = ["qemu-img", "compare", "-f", "vpc", "-F", fmt, disk["path"], str(src)]
        print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)
        res = subprocess.run(argv, capture_output=True, text=True)
        print(res.stdout.strip(), flush=True)
        if res.returncode != 0:
            raise SystemExit("demo: recovered disk differs from the source")


if __name__ == "__main__":
    sys.exit(main())
