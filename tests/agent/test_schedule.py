"""The engine's schedule: a host's VMs cycle in their own slots of the copy interval (spread,
not all at once), the first copy is not delayed, and how many codec threads a host runs."""

from __future__ import annotations

from pathlib import Path

from agent.replication.cycle import codec_workers
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
        wait_for(lambda: len(host.rpc.points) >= 3, 20, what="three first points")
        assert engine._scheduler is not None
        for vm_id in vms:
            job = engine._scheduler.get_job(f"vm-{vm_id}")
            at = job.next_run_time.timestamp()
            assert abs(phase_slot(vm_id, 30, at) - at) < 1e-3, "the next cycle is in the VM's slot"
        offsets = {round(engine._scheduler.get_job(f"vm-{v}").next_run_time.timestamp() % 30, 3) for v in vms}
        assert len(offsets) == 3
    finally:
        host.close()


def test_two_codec_threads_per_core_bounded() -> None:
    # a thread waiting for its window's Missing answer must not leave a core idle
    assert codec_workers(1) == 2 and codec_workers(2) == 4 and codec_workers(64) == 6
    assert codec_workers(None) == 2
