"""Replication over a long link, against an rsync daemon over the same link.

Every connection of the site (registration, the provider, the agent) reaches the cloud service
through a forwarder that holds each byte half a round trip in each direction
(``tests.proxies.Forwarder``: this kernel has no netem, FIELD-NOTES). Bandwidth is not limited:
what is measured is how much of a cycle waits for round trips (each window's ``Missing``, each
``PutChunks`` call's durable reply, the commit, HTTP/2 flow control while its windows grow).

Per round trip (default 0, 0.1 and 0.3 s): a fresh cloud service, one protected VM whose disk
gets ``--size-mib`` of content through the guest path (alternating MiB of random bytes and of
this machine's Python sources, so half compresses), a first copy, then 1% of its blocks
rewritten and an incremental cycle. The peer is ``rsync --inplace --no-whole-file -z
--compress-choice=zstd --ignore-times`` (the quick check would skip a file changed within the
second of its last copy) of a raw file with the same content to an ``rsync --daemon`` reached
through a forwarder with the same delay, before and after the same change. Reported: seconds
and bytes through the link of each. Figures, not a test.

    .venv/bin/python bench/long_link.py [--size-mib 512] [--rtts 0,0.1,0.3] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.hypervisor import LocalHypervisor  # noqa: E402
from bench.replication_scale import once  # noqa: E402
from tests.harness import Cloud, Procs, free_port, wait_for  # noqa: E402
from tests.proxies import Forwarder  # noqa: E402
from tests.replication.fixture import MiB, protect, serve_endpoints  # noqa: E402

BLOCK = 65536


def text_source() -> bytes:
    """About 8 MiB of this machine's Python sources: the compressible half of the content."""
    parts: list[bytes] = []
    size = 0
    for path in sorted(Path(sys.base_prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}").glob("*.py")):
        data = path.read_bytes()
        parts.append(data)
        size += len(data)
        if size >= 8 * MiB:
            break
    return b"".join(parts)


class Content:
    """The disk's content, the same for our VM and the peer's raw file."""

    def __init__(self, size: int, seed: int = 1) -> None:
        self.size = size
        self.rng = random.Random(seed)
        self.text = text_source()

    def piece(self, index: int, length: int) -> bytes:
        if index % 2:
            return self.rng.randbytes(length)
        start = self.rng.randrange(0, len(self.text) - length)
        return self.text[start:start + length]


class RsyncDaemon:
    """``rsync --daemon`` serving a writable module ``disk`` under ``root``."""

    def __init__(self, procs: Procs, root: Path) -> None:
        self.dest = root / "rsync-dst"
        self.dest.mkdir()
        self.port = free_port()
        conf = root / "rsyncd.conf"
        ids = "uid = 0\ngid = 0\n" if os.geteuid() == 0 else ""
        conf.write_text(f"pid file = {root / 'rsyncd.pid'}\nuse chroot = no\n{ids}"
                        f"[disk]\npath = {self.dest}\nread only = no\n")
        procs.start("rsyncd", ["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={self.port}",
                               "--address=127.0.0.1"])
        wait_for(lambda: _listening(self.port), 20, what="rsync daemon listening")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def rsync_to(src: Path, link: Forwarder) -> dict[str, Any]:
    before = link.bytes_between(0, link.now() + 1)
    t = time.monotonic()
    out = subprocess.run(["rsync", "--inplace", "--no-whole-file", "--ignore-times", "-z", "--compress-choice=zstd",
                          "--stats", str(src), f"rsync://127.0.0.1:{link.port}/disk/disk.raw"],
                         check=True, capture_output=True, text=True)
    seconds = time.monotonic() - t
    sent = re.search(r"Total bytes sent: ([\d,]+)", out.stdout)
    return {"seconds": round(seconds, 3), "bytes_sent": int(sent.group(1).replace(",", "")) if sent else -1,
            "link_bytes": link.bytes_between(0, link.now() + 1) - before}


def ours(p: Any, cloud_pid: int, link: Forwarder) -> dict[str, Any]:
    before = link.bytes_between(0, link.now() + 1)
    res = once(p, cloud_pid)
    return {"seconds": round(res["seconds"], 3), "connect_s": round(res.get("connect_s", 0.0), 3),
            "bytes_sent": res["bytes_sent"], "link_bytes": link.bytes_between(0, link.now() + 1) - before,
            "phases": {k: round(v, 3) for k, v in res.get("phases", {}).items()},
            "agent_cpu_s": res["agent_cpu_s"], "cloud_cpu_s": res["cloud_cpu_s"]}


def run_rtt(rtt: float, size: int, changed: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-longlink-"))
    procs = Procs(root)
    links: list[Forwarder] = []
    try:
        cloud = Cloud(procs, root / "cloud").start()
        api, reg = Forwarder(cloud.port, one_way_delay=rtt / 2), Forwarder(cloud.reg_port, one_way_delay=rtt / 2)
        links += [api, reg]
        serve_endpoints(cloud, [api.endpoint], [reg.endpoint])
        t = time.monotonic()
        p = protect(cloud, root, os_size=size, fill=False)
        setup_s = time.monotonic() - t
        assert cloud.proc is not None
        cloud_pid = cloud.proc.popen.pid
        content = Content(size)
        peer_src = root / "peer-disk.raw"
        hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
        with open(peer_src, "wb") as f:
            for i in range(size // MiB):
                piece = content.piece(i, MiB)
                hv.write("vm1", 0, i * MiB, piece)
                f.write(piece)
        first = ours(p, cloud_pid, api)
        daemon = RsyncDaemon(procs, root)
        rlink = Forwarder(daemon.port, one_way_delay=rtt / 2)
        links.append(rlink)
        rsync_first = rsync_to(peer_src, rlink)
        rng = random.Random(2)
        blocks = rng.sample(range(size // BLOCK), int(size // BLOCK * changed))
        with open(peer_src, "r+b") as f:
            for k, b in enumerate(blocks):
                data = content.piece(k, BLOCK)
                hv.write("vm1", 0, b * BLOCK, data)
                f.seek(b * BLOCK)
                f.write(data)
        hv.close()
        incr = ours(p, cloud_pid, api)
        rsync_incr = rsync_to(peer_src, rlink)
        return {"rtt_s": rtt, "setup_s": round(setup_s, 2), "changed_blocks": len(blocks),
                "first": first, "rsync_first": rsync_first, "incremental": incr, "rsync_incremental": rsync_incr,
                "first_MBps": round(size / first["seconds"] / 1e6, 1),
                "first_vs_rsync": round(rsync_first["seconds"] / first["seconds"], 2),
                "incremental_vs_rsync": round(rsync_incr["seconds"] / incr["seconds"], 2)}
    finally:
        for link in links:
            link.stop()
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rtts", default="0,0.1,0.3", help="round trips in seconds, comma-separated")
    ap.add_argument("--changed", type=float, default=0.01)
    args = ap.parse_args()
    result: dict[str, Any] = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, "
                                         f"Python {platform.python_version()}", "size_mib": args.size_mib, "runs": []}
    for rtt in (float(x) for x in args.rtts.split(",")):
        row = run_rtt(rtt, args.size_mib * MiB, args.changed)
        print(json.dumps(row), file=sys.stderr, flush=True)
        result["runs"].append(row)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
