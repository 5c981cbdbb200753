"""The engine's schedule: a host's VMs cycle in their own slots of the copy interval (spread,
not all at once), the first copy is not delayed, how many codec threads a host runs, and the
windows and read buffers its cycles share."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.replication import cycle
from agent.replication.cycle import Windows, codec_workers
from agent.replication.engine import phase_slot
from tests.agent.fakes import make_host
from tests.harness import wait_for


def test_phase_slots_spread_a_hosts_vms_over_the_interval() -> None:
    due, interval = 1_000_000.0, 30.0
    at = sorted(phase_slot(f"vm-{i:03d}", interval, due) for i in range(25))
    assert all(due <= t < due + interval for t in at)
    assert len({round(t, 3) for t in at}) == 25
    gaps = [b - a for a, b in zip(at, [*at[1:], at[0] + interval], strict=True)]
    assert max(gaps) < interval / 4          # no long stretch without a cycle
    # stable: the same slot in every interval, whenever it is asked
    for i in range(5):
        t = phase_slot(f"vm-{i:03d}", interval, due)
        assert abs(phase_slot(f"vm-{i:03d}", interval, due + 7 * interval) - (t + 7 * interval)) < 1e-6
        assert abs(phase_slot(f"vm-{i:03d}", interval, t) - t) < 1e-6


def test_first_cycles_run_at_once_then_each_vm_moves_to_its_slot(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    try:
        vms = [host.add_vm(name) for name in ("vm-a", "vm-b", "vm-c")]
        engine = host.engine()
        engine.start()
        # the first copies start when due, together (none waits for its slot)
        wait_for(lambda: len(host.rpc.points) >= 3, 60, what="three first points")
        assert engine._scheduler is not None
        for vm_id in vms:
            job = engine._scheduler.get_job(f"vm-{vm_id}")
            at = job.next_run_time.timestamp()
            # (asked from just before: the scheduler keeps microseconds, the slot is a float)
            assert abs(phase_slot(vm_id, 30, at - 0.5) - at) < 1e-3, "the next cycle is in the VM's slot"
        offsets = {round(engine._scheduler.get_job(f"vm-{v}").next_run_time.timestamp() % 30, 3) for v in vms}
        assert len(offsets) == 3
    finally:
        host.close()


def test_two_codec_threads_per_core_bounded() -> None:
    # a thread waiting for its window's Missing answer must not leave a core idle
    assert codec_workers(1) == 2 and codec_workers(2) == 4 and codec_workers(64) == 6
    assert codec_workers(None) == 2


class _CountingSlots:
    """A semaphore that records how many slots were held at once."""

    def __init__(self, n: int) -> None:
        self.sem = threading.BoundedSemaphore(n)
        self.held = self.peak = 0
        self.lock = threading.Lock()

    def acquire(self, blocking: bool = True) -> bool:
        if not self.sem.acquire(blocking):
            return False
        with self.lock:
            self.held += 1
            self.peak = max(self.peak, self.held)
        return True

    def release(self) -> None:
        with self.lock:
            self.held -= 1
        self.sem.release()


def test_concurrent_cycles_of_a_host_share_its_bound_on_windows_in_flight(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cycle, "WINDOW_BLOCKS", 4)   # 2 MiB disks in 8 windows each
    host = make_host(tmp_path)
    try:
        vms = [host.add_vm(f"vm-{i}") for i in range(4)]
        for name in host.vms:
            for b in range(0, 32):   # 2 MiB disks: several 64-block windows each
                host.hv.write(name, 0, b * 65536, bytes([b + 1]) * 65536)
        engine = host.engine()       # one codec thread: at most 3 windows in flight on the host
        slots = _CountingSlots(engine.windows.depth)
        engine.windows.slots = slots  # type: ignore[assignment]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(engine.replicate, vms))
        assert all(r.point_id for r in results)
        assert 0 < slots.peak <= engine.windows.depth == 3
        assert slots.held == 0                       # every slot given back
        assert engine.windows.buffers.qsize() <= 1   # one read buffer per codec thread
    finally:
        host.close()


def test_a_cycle_progresses_while_other_cycles_hold_every_slot_of_the_host(tmp_path: Path) -> None:
    # e.g. a throttled first copy of another VM: this VM's cycle must not wait for it
    host = make_host(tmp_path)
    try:
        vm = host.add_vm("vm-a")
        for b in range(32):
            host.hv.write("vm-a", 0, b * 65536, bytes([b + 1]) * 65536)
        engine = host.engine()
        for _ in range(engine.windows.depth):
            assert engine.windows.slots.acquire(blocking=False)
        done = threading.Event()

        def cycle_then_done() -> None:
            engine.replicate(vm)
            done.set()

        worker = threading.Thread(target=cycle_then_done, daemon=True)
        worker.start()
        worker.join(60)
        assert done.is_set(), "the cycle waited for the host's slots"
        for _ in range(engine.windows.depth):
            engine.windows.slots.release()
    finally:
        host.close()


def _buffer_sizes(windows: Windows) -> list[int]:
    sizes = []
    while not windows.buffers.empty():
        sizes.append(len(windows.buffers.get_nowait()))
    return sizes


def test_a_full_scans_read_buffers_are_let_go_when_it_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first copy reads whole-disk windows (16 MiB buffers in production); incremental
    cycles need 4 MiB ones (kept: the next test). The big ones used to stay for the life of
    the agent (64 MiB of its ~170 MiB under bench/load.py)."""
    monkeypatch.setattr(cycle, "SMALL_BUFFER", 4 * 65536)   # the 2 MiB disk's window is "big"
    host = make_host(tmp_path)
    try:
        vm = host.add_vm("vm-a")
        host.hv.write("vm-a", 0, 0, b"x" * (2 << 20))
        engine = host.engine()
        assert engine.replicate(vm).modes == ["initial"]
        assert _buffer_sizes(engine.windows) == []   # the scan's 2 MiB buffer let go
    finally:
        host.close()


def test_big_buffers_stay_while_any_scan_of_the_host_runs() -> None:
    big, small = bytearray(cycle.SMALL_BUFFER + 1), bytearray(cycle.SMALL_BUFFER)
    w = Windows(2)
    w.begin_scan()
    w.begin_scan()
    w.give_back(big)
    w.end_scan()                      # another VM's first copy still reads whole disks
    assert w.buffers.qsize() == 1
    w.end_scan()
    assert w.buffers.qsize() == 0     # the last scan ended: let go
    w.give_back(small)
    w.give_back(bytearray(cycle.SMALL_BUFFER + 1))   # one that was in use meanwhile
    assert _buffer_sizes(w) == [cycle.SMALL_BUFFER]
