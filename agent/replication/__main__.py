"""Run the replication engine on its own, beside (or instead of) the agent daemon:

    python -m agent.replication run  --config AGENT.toml          # the schedule, until SIGTERM
    python -m agent.replication once --config AGENT.toml VM_ID [--app]   # one cycle, prints JSON

Used by tests and benchmarks to drive cycles as real processes (kill -9 included).

``once`` connects to the cloud before its cycle starts and reports that as ``connect_s``,
outside the cycle's ``seconds``: the daemon's cycles find their connections open (its
heartbeats and earlier cycles keep them), so a cycle's seconds are what a scheduled cycle
takes. The TLS handshakes were 8-15 ms of a 0.2 s day-of-change cycle (bench/real_data.py).
(A site-to-site VM's cycle ships to its recovery host; that connection opens in the cycle.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import grpc

from agent.config import load
from agent.hypervisor import LocalHypervisor
from agent.replica.channel import ReplicaChannels
from agent.replication.engine import Engine
from agent.replication.throttle import Throttle
from agent.settings import Settings
from asrclock import from_environment
from asrerrors import AsrError
from asrops import allocator, environment
from asrops.lifecycle import Lifecycle
from asrops.logs import setup
from registration.link import CloudLink
from registration.state import load as load_identity


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.replication")
    p.add_argument("action", choices=("run", "once"))
    p.add_argument("vm_id", nargs="?")
    p.add_argument("--config", required=True)
    p.add_argument("--app", action="store_true", help="take an app-consistent point (once)")
    p.add_argument("--shutdown-first", action="store_true")
    args = p.parse_args(argv)
    allocator.tune()
    try:
        setup("asr-agent-replication")
        environment.check("asr-agent")
        cfg = load(args.config)
        ident = load_identity(cfg.state_dir)
        clock = from_environment()
        link = CloudLink(ident, clock, cfg.proxy)
        hv = LocalHypervisor(cfg.vm_dir, clock)
        engine = Engine(hv, Settings(cfg.state_dir), link.channel, link.target, ident.vault_id, clock,
                        cfg.state_dir, bulk_channel=link.bulk_channel,
                        throttle=Throttle(cfg.bandwidth, clock) if cfg.bandwidth is not None else None,
                        replica_channels=ReplicaChannels(ident, cfg.proxy))
        if args.action == "once":
            connect_s = _connect(link)
            res = engine.replicate(args.vm_id, app_consistent=True if args.app else None,
                                   shutdown_first=args.shutdown_first)
            print(json.dumps({**dataclasses.asdict(res), "connect_s": connect_s}))
            engine.stop()
            return 0
        life = Lifecycle.for_console()
        engine.start()
        life.ready("replication engine")
        life.serve()
        life.stop()
        engine.stop()
        return 0
    except AsrError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_code


def _connect(link: CloudLink, timeout: float = 2.0) -> float:
    """Open both connections to the cloud's current endpoint, as a running daemon has them;
    seconds taken. One that does not open in ``timeout`` is left to the cycle, whose first
    call reports why (an unreachable cloud is the cycle's error to name, not this wait's)."""
    t = time.monotonic()
    for channel in (link.channel, link.bulk_channel):
        try:
            grpc.channel_ready_future(channel.channel(link.target)).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            break
    return round(time.monotonic() - t, 4)


if __name__ == "__main__":
    sys.exit(main())
