"""Snapshots while a separate writer process (the CLI workload) keeps writing."""

from __future__ import annotations

import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

from agent.hypervisor import BLOCK_SIZE, LocalHypervisor, Snapshot, parse_header, plan

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]
WRITE = 4096
SEED = 42


def wait_for(cond: object, what: str, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def read_all(snap: Snapshot) -> list[bytes]:
    return [
        b"".join(snap.read_block(d, b) for b in range(-(-snap.disk_size(d) // BLOCK_SIZE)))
        for d in range(snap.disk_count)
    ]


def visible_writes(disks: list[bytes]) -> dict[tuple[int, int], int]:
    seen = {}
    for d, data in enumerate(disks):
        for off in range(0, len(data), WRITE):
            h = parse_header(data[off:off + WRITE])
            if h is not None:
                assert h[1] == d
                seen[(d, off)] = h[0]
    return seen


def prefix_state(sizes: list[int], upto: int) -> dict[tuple[int, int], int]:
    state: dict[tuple[int, int], int] = {}
    for k, d, off in islice(plan(SEED, sizes, WRITE, "random"), upto + 1):
        state[(d, off)] = k
    return state


def test_snapshots_are_stable_and_crash_consistent(
    hv: LocalHypervisor, vm: str, site: dict[str, Path]
) -> None:
    sizes = [d.virtual_size for d in hv.get(vm).disks]
    hv.snapshot(vm).commit()  # start tracking
    writer = subprocess.Popen(
        [sys.executable, "-m", "agent.hypervisor.cli", "vm", "workload", vm, "--config",
         str(site["config"]), "--rate", "8", "--block-size", str(WRITE), "--duration", "60",
         "--seed", str(SEED), "--sequence-numbers"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        last = -1
        for _ in range(3):
            wait_for(lambda: sum(s["dirty_blocks"] or 0 for s in hv.tracking_state(vm)) > 20,
                     "the writer to dirty some blocks")
            snap = hv.snapshot(vm)
            first = read_all(snap)
            seen = visible_writes(first)
            top = max(seen.values())
            assert top > last
            # crash consistency: the disks show exactly the effect of writes 0..top
            assert seen == prefix_state(sizes, top)
            # dirty set: exactly the blocks written since the previous snapshot
            touched: set[tuple[int, int]] = set()
            for k, d, off in islice(plan(SEED, sizes, WRITE, "random"), top + 1):
                if k > last:
                    touched.add((d, off // BLOCK_SIZE))
            dirty = {(d, b) for d in range(2) for b in snap.dirty_blocks(d) or []}
            assert dirty == touched
            # the writer keeps going; the snapshot does not move
            wait_for(lambda: sum(s["dirty_blocks"] or 0 for s in hv.tracking_state(vm)) > 20,
                     "more writes after the snapshot")
            assert read_all(snap) == first
            assert writer.poll() is None
            snap.commit()
            last = top
    finally:
        writer.terminate()
        _, err = writer.communicate(timeout=20)
    assert "Traceback" not in err, err
