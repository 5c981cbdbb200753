"""The local hypervisor: definitions, guest writes, change tracking, snapshots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.hypervisor import BLOCK_SIZE, LocalHypervisor, tracking
from asrerrors import AlreadyExists, InvalidName, NotFound, StateConflict, ValidationFailed
from vmspec import DiskSpec, NicSpec, VmSpec, protection_violations

from . import qemu

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def cli(site: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.hypervisor.cli", "vm", *args, "--config",
         str(site["config"])],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )


def test_crud(hv: LocalHypervisor, site: dict[str, Path]) -> None:
    vm = hv.create("db-1", str(site["os"]), [str(site["data"])], guest_os="windows-server-2019")
    assert [(d.format, d.subformat, d.virtual_size, d.os_disk, d.controller) for d in vm.disks] == [
        ("vhdx", "dynamic", 4 * MiB, True, "IDE"), ("vhd", "dynamic", 4 * MiB, False, "SCSI")]
    assert vm.disks[0].path == str(site["os"]) and vm.power_state == "Off"
    assert protection_violations(vm) == []
    assert [v.name for v in hv.list()] == ["db-1"]
    with pytest.raises(AlreadyExists):
        hv.create("db-1", str(site["os"]))
    with pytest.raises(InvalidName):
        hv.create("-bad", str(site["os"]))
    with pytest.raises(NotFound, match="nope.vhdx"):
        hv.create("db-2", str(site["tmp"] / "nope.vhdx"))
    with pytest.raises(AlreadyExists, match="db-1"):
        hv.create("db-3", str(site["os"]))  # disk already belongs to db-1
    assert hv.start("db-1").power_state == "Running"
    assert hv.get("db-1").power_state == "Running"
    with pytest.raises(StateConflict):
        hv.delete("db-1")
    hv.stop("db-1")
    vm = hv.update("db-1", remove_disks=[1])
    assert len(vm.disks) == 1
    defn = site["tmp"] / "def.json"
    hv.delete("db-1")
    with pytest.raises(NotFound):
        hv.get("db-1")
    # import re-reads disk facts: the lies in the file are ignored
    vm.disks[0] = DiskSpec("os.vhdx", "IDE", True, "raw", "", 1, None)
    vm.name = "imported"
    defn.write_text(json.dumps(vm.to_dict()))
    got = hv.import_vm(str(defn))
    assert (got.disks[0].format, got.disks[0].virtual_size) == ("vhdx", 4 * MiB)


def test_protection_rules_list_every_violation() -> None:
    big = DiskSpec("/x/d.vhdx", "SCSI", False, "vhdx", "dynamic", 1100 * 2**30)
    vm = VmSpec("bad-", 2, 1, 512, "windows-7-x86",
                [DiskSpec("/x/os.img", "SCSI", True, "raw", "", 200 * 2**30), big],
                [NicSpec("static", "10.0.0.5/24"), NicSpec("dhcp")])
    v = protection_violations(vm)
    text = "\n".join(v)
    for needle in ("name", "generation 2", "windows-7-x86", "must be on IDE", "127 GiB",
                   "1100 GiB exceeds the 1024 GiB data-disk limit", "'raw'", "2 NICs"):
        assert needle in text, (needle, text)
    assert any("NIC 0 uses static" in m for m in protection_violations(vm, chosen_nic=0))
    assert not any("NIC" in m for m in protection_violations(vm, chosen_nic=1))
    assert VmSpec.from_dict(json.loads(json.dumps(vm.to_dict()))) == vm


def test_tracking_marks_exactly_touched_blocks(hv: LocalHypervisor, vm: str) -> None:
    first = hv.snapshot(vm)
    assert first.dirty_blocks(0) is None and first.dirty_blocks(1) is None  # never tracked
    first.commit()
    hv.write(vm, 0, BLOCK_SIZE - 1, b"ab")  # blocks 0 and 1
    hv.write(vm, 0, 10 * BLOCK_SIZE, b"x" * BLOCK_SIZE)  # block 10 exactly
    hv.write(vm, 1, 3 * BLOCK_SIZE + 5, b"y")
    snap = hv.snapshot(vm)
    assert snap.dirty_blocks(0) == [0, 1, 10]
    assert snap.dirty_blocks(1) == [3]
    assert snap.read_block(0, 10) == b"x" * BLOCK_SIZE
    snap.commit()
    snap = hv.snapshot(vm)
    assert snap.dirty_blocks(0) == [] and snap.dirty_blocks(1) == []
    snap.commit()


def test_copy_on_write_and_commit_abort(hv: LocalHypervisor, vm: str) -> None:
    hv.snapshot(vm).commit()
    hv.write(vm, 1, 0, b"\x01" * BLOCK_SIZE)
    snap = hv.snapshot(vm)
    assert snap.stall_seconds < 1
    with pytest.raises(StateConflict):
        hv.snapshot(vm)  # one open snapshot per VM
    hv.write(vm, 1, 0, b"\x02" * 100)
    hv.write(vm, 1, 5 * BLOCK_SIZE, b"\x03")
    assert snap.read_block(1, 0) == b"\x01" * BLOCK_SIZE
    assert snap.read_block(1, 5) == bytes(BLOCK_SIZE)
    assert hv.read(vm, 1, 0, 101) == b"\x02" * 100 + b"\x01"
    snap.abort()  # not acknowledged: block 0 stays dirty, with the new block 5
    snap2 = hv.snapshot(vm)
    assert snap2.dirty_blocks(1) == [0, 5]
    assert snap2.read_block(1, 0)[:101] == b"\x02" * 100 + b"\x01"
    snap2.commit()
    snap3 = hv.snapshot(vm)
    assert snap3.dirty_blocks(1) == []
    with pytest.raises(StateConflict):
        snap2.commit()
    snap3.commit()


def test_reset_and_mark_all(hv: LocalHypervisor, vm: str) -> None:
    hv.snapshot(vm).commit()
    hv.reset_tracking(vm, 1)
    hv.mark_all_dirty(vm)
    snap = hv.snapshot(vm)
    assert snap.dirty_blocks(0) == list(range(4 * MiB // BLOCK_SIZE))
    snap.commit()
    hv.reset_tracking(vm, 1)
    assert [s["tracked"] for s in hv.tracking_state(vm)] == [True, False]


def test_app_consistent_runs_hook(hv: LocalHypervisor, site: dict[str, Path]) -> None:
    marker = site["tmp"] / "quiesced"
    hv.create("app-1", str(site["os"]), guest_os="rhel-9",
              app_quiesce_hook=["touch", str(marker)])
    snap = hv.snapshot("app-1", app_consistent=True)
    assert snap.app_consistent and marker.exists()
    snap.commit()


def test_stale_snapshot_of_killed_process_is_recovered(
    hv: LocalHypervisor, vm: str, site: dict[str, Path]
) -> None:
    hv.snapshot(vm).commit()
    hv.write(vm, 0, 0, b"a")  # block 0 dirty, captured by the doomed snapshot
    code = (
        "import sys, time\n"
        "from agent.hypervisor import LocalHypervisor\n"
        f"s = LocalHypervisor({str(site['vm_dir'])!r}).snapshot({vm!r})\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pytest.raises(StateConflict):
            hv.snapshot(vm)  # its owner is alive
        hv.write(vm, 0, 7 * BLOCK_SIZE, b"b")
    finally:
        os.kill(proc.pid, 9)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert hv.recover() == [vm]  # what the agent does at start
    snap = hv.snapshot(vm)
    assert snap.dirty_blocks(0) == [0, 7]
    snap.commit()


def test_cli(site: dict[str, Path]) -> None:
    r = cli(site, "create", "cli-1", "--os-disk", str(site["os"]), "--data-disk",
            str(site["data"]), "--os", "debian-12", "--nic", "dhcp", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["disks"][1]["path"] == str(site["data"]) and out["disks"][1]["format"] == "vhd"
    r = cli(site, "write", "cli-1", "--disk", "1", "--offset", "4096", "--length", "10",
            "--pattern", "0xab")
    assert r.returncode == StateConflict.exit_code and "ASR-0042" in r.stderr
    assert cli(site, "start", "cli-1").returncode == 0
    r = cli(site, "write", "cli-1", "--disk", "1", "--offset", "4096", "--length", "10",
            "--pattern", "0xab", "--json")
    assert r.returncode == 0, r.stderr
    raw = qemu.to_raw(site["data"], "vhd-dynamic", site["tmp"] / "d.raw")
    assert raw[4096:4106] == b"\xab" * 10 and raw[4106] == 0
    r = cli(site, "list", "--json")
    assert [v["name"] for v in json.loads(r.stdout)] == ["cli-1"]
    r = cli(site, "show", "nope", "--json")
    assert r.returncode == NotFound.exit_code
    r = cli(site, "create", "Bad_Name", "--os-disk", str(site["os"]), "--os", "debian-12")
    assert r.returncode == InvalidName.exit_code and "ASR-0010" in r.stderr


def test_tracking_log_trust(tmp_path: Path) -> None:
    log = tmp_path / "disk0.dirty"
    size = 10 * BLOCK_SIZE + 1  # 11 blocks, the last one short
    tracking.write_log(log, size)
    tracking.mark(log, tracking.blocks_touched(BLOCK_SIZE * 10, 1))
    bits = tracking.read_log(log, size)
    assert bits is not None and tracking.bits_to_list(bits) == [10]
    assert tracking.read_log(log, size + BLOCK_SIZE) is None  # disk resized
    # bits set but never synced, and the host rebooted since: lost writes are possible
    raw = bytearray(log.read_bytes())
    raw[24:40] = b"\x99" * 16
    log.write_bytes(bytes(raw))
    assert tracking.read_log(log, size) is None
    tracking.write_log(log, size)
    tracking.mark(log, range(0, 2))
    tracking.sync(log)
    raw = bytearray(log.read_bytes())
    raw[24:40] = b"\x99" * 16  # synced: a reboot does not matter
    log.write_bytes(bytes(raw))
    assert tracking.read_log(log, size) is not None
    log.write_bytes(b"garbage")
    assert tracking.read_log(log, size) is None


def test_batched_snapshot_reads_match_single_block_reads(hv: LocalHypervisor, vm: str) -> None:
    """read_block_list: one lock hold, COW-preserved and live blocks mixed in
    one range, scattered lists, a reused buffer; the same bytes as read_block."""
    for disk in (0, 1):
        for b in range(0, 8, 2):
            hv.write(vm, disk, b * BLOCK_SIZE, bytes([b + 1 + 16 * disk]) * BLOCK_SIZE)
    snap = hv.snapshot(vm)
    for disk in (0, 1):
        hv.write(vm, disk, 2 * BLOCK_SIZE, b"\xee" * BLOCK_SIZE)  # preserved in the COW store
        hv.write(vm, disk, 3 * BLOCK_SIZE + 7, b"\xdd")            # preserved (a hole before)
        nblocks = -(-snap.disk_size(disk) // BLOCK_SIZE)
        single = [snap.read_block(disk, b) for b in range(nblocks)]
        assert single[2] == bytes([3 + 16 * disk]) * BLOCK_SIZE and single[3] == bytes(BLOCK_SIZE)
        assert bytes(snap.read_block_list(disk, range(0, nblocks))) == b"".join(single)
        buf = bytearray(8 * BLOCK_SIZE)
        assert bytes(snap.read_block_list(disk, range(1, 7), buf)) == b"".join(single[1:7])
        picked = [0, 2, 3, 7, nblocks - 1]
        assert bytes(snap.read_block_list(disk, picked, buf)) == b"".join(single[b] for b in picked)
        with pytest.raises(NotFound):
            snap.read_block_list(disk, range(nblocks - 1, nblocks + 1))
        with pytest.raises(ValueError):
            snap.read_block_list(disk, [3, 2])
    snap.commit()


def test_a_definition_is_published_whole_and_a_broken_one_is_left_out(
        hv: LocalHypervisor, vm: str, site: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    """Regressions: ``create`` reserved the name with an empty definition file before it
    wrote the definition, and ``list()`` raised on any definition it could not read. An
    agent daemon whose first inventory met a create in progress, or an operator's broken
    file, got "not valid JSON" (ASR-0043) and stopped: every VM of the host out of
    inventory and replication. Now a definition is published whole (written durably, then
    linked under its name only if the name is free), and ``list()`` leaves a broken one out,
    logging it once, naming the file."""
    # publication: the name never exists before its content; a second create of it is refused
    assert not list(site["vm_dir"].glob(".*tmp*"))
    with pytest.raises(AlreadyExists):
        hv.create(vm, str(site["os"]))
    assert hv.get(vm).name == vm and not list(site["vm_dir"].glob(".*tmp*"))
    # broken definitions: empty, not JSON, wrong field types, a name that is not a VM name
    broken = ("bad name.json", "bad-1.json", "empty-1.json", "typed-1.json")
    (site["vm_dir"] / "empty-1.json").write_bytes(b"")
    (site["vm_dir"] / "bad-1.json").write_text("{not json")
    (site["vm_dir"] / "typed-1.json").write_text('{"name": "typed-1", "cpus": "two"}')
    (site["vm_dir"] / "bad name.json").write_text("{}")
    with caplog.at_level("ERROR", logger="agent.hypervisor.local"):
        assert [v.name for v in hv.list()] == [vm]
        assert [v.name for v in hv.list()] == [vm]   # again: nothing new to report
    logged = [r for r in caplog.records if "broken" in r.getMessage()]
    files = sorted(r.fields["file"] for r in logged)  # type: ignore[attr-defined]
    assert files == [str(site["vm_dir"] / f) for f in broken], files
    assert set(hv.broken) == {site["vm_dir"] / f for f in broken}
    assert "not valid JSON" in hv.broken[site["vm_dir"] / "bad-1.json"]
    assert "typed-1.json" in hv.broken[site["vm_dir"] / "typed-1.json"]
    with pytest.raises(ValidationFailed, match="bad-1.json"):
        hv.get("bad-1")
    # the operator's tool lists the good VMs and names every broken file, exit non-zero
    res = cli(site, "list")
    assert res.returncode == ValidationFailed.exit_code, res
    assert res.stdout.split()[0] == vm
    for f in broken:
        assert f in res.stderr, res.stderr
    # fixed, they are listed again (removed here), and nothing is left to report
    for f in broken:
        (site["vm_dir"] / f).unlink()
    assert [v.name for v in hv.list()] == [vm] and hv.broken == {}
    assert cli(site, "list").returncode == 0
