"""The "local" hypervisor adapter: VM definitions on disk, power state, and guest writes.

Disk facts always come from the images (``diskimage.probe``), never from the caller. Guest
writes go through :meth:`LocalHypervisor.write`, which, under the per-VM lock, preserves the
old content for an open snapshot (copy-on-write), marks the touched blocks dirty, and then
writes the image. Writers and the replication agent may be different processes: they
coordinate only through the files under ``vm_dir``.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asrclock import Clock, SystemClock
from asrerrors import (
    AlreadyExists,
    DiskImageError,
    InvalidName,
    NotFound,
    StateConflict,
    UsageError,
    ValidationFailed,
)
from diskimage import DiskImage, open_disk, probe
from durablefile import fsync_dir, write_atomic
from vmspec import CONTROLLERS, DiskSpec, NicSpec, VmSpec, guest_os_problem, validate_name

from . import quiesce, tracking
from .fence import read_marker, refusal
from .snapshot import Snapshot, preserve_before_write, recover_stale, take_snapshot
from .store import STATE_DIR, VmPaths, atomic_write_json, vm_lock

log = logging.getLogger(__name__)

PATTERN_PIECE = 4 << 20  # bytes per guest write of write_pattern


# What a file's name promises: a file named like a VHD or VHDX must be one (a random or
# damaged file under such a name would otherwise be taken for a raw disk).
_SUFFIX_FORMAT = {".vhd": "vhd", ".avhd": "vhd", ".vhdx": "vhdx", ".avhdx": "vhdx"}


def disk_spec(path: str, controller: str, os_disk: bool) -> DiskSpec:
    """A DiskSpec whose format, size and parent are read from the image itself."""
    if controller not in CONTROLLERS:
        raise UsageError(f"controller {controller!r} is not one of {', '.join(CONTROLLERS)}")
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise NotFound(f"disk image {path} does not exist")
    facts = probe(path)
    promised = _SUFFIX_FORMAT.get(Path(path).suffix.lower())
    if promised is not None and facts.format != promised:
        raise DiskImageError(
            f"disk image {path} is named as a {promised.upper()} file but has no {promised.upper()} "
            f"signature ({'a VHDX file identifier at byte 0' if promised == 'vhdx' else 'a VHD footer'})",
            causes=("The file is damaged, was truncated, or is not a disk image.",
                    "The file is a raw image with a misleading name."),
            action="Check the image with 'qemu-img info'; rename a raw image to .img or .raw.")
    return DiskSpec(path, controller, os_disk, facts.format, facts.subformat,
                    facts.virtual_size, facts.parent)


def check_guest_os(guest_os: str) -> None:
    """Refuse at creation a guest OS that protection would refuse, in the same words."""
    problem = guest_os_problem(guest_os)
    if problem is not None:
        raise ValidationFailed(f"{problem}", action="Create the VM with a supported 64-bit guest OS (--os).")


class LocalHypervisor:
    def __init__(self, vm_dir: str, clock: Clock | None = None) -> None:
        self.vm_dir = Path(vm_dir).absolute()
        self.clock: Clock = clock or SystemClock()
        self.vm_dir.mkdir(parents=True, exist_ok=True)
        # Open images for the guest write path, keyed by (vm_id, disk index). Safe to keep
        # across processes' writes: the images cache no allocation metadata.
        self._images: dict[tuple[str, int], DiskImage] = {}
        self._broken: dict[Path, str] = {}   # definitions list() left out, and why (logged once)

    # -- definitions -------------------------------------------------------------------

    def _paths(self, name: str) -> VmPaths:
        return VmPaths(self.vm_dir, name)

    def _save(self, vm: VmSpec) -> None:
        atomic_write_json(self._paths(vm.name).definition, vm.to_dict())

    def get(self, name: str) -> VmSpec:
        validate_name(name)
        path = self._paths(name).definition
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise NotFound(f"VM {name} does not exist in {self.vm_dir}") from exc
        # (``_add`` publishes a definition whole, so an empty file is never a create in
        # progress: it is as broken as any other bad content)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValidationFailed(f"VM definition {path} is not valid JSON: {exc}") from exc
        try:
            return VmSpec.from_dict(data)
        except ValidationFailed as exc:
            raise ValidationFailed(f"VM definition {path}: {exc.message}") from exc

    def list(self) -> list[VmSpec]:
        """Every VM with a valid definition; one deleted meanwhile is not listed. A broken
        definition (bad JSON, a field of the wrong type, a file name that is not a VM name)
        is logged as an error, once per problem, and left out: one bad file must not take
        the host's other VMs out of inventory and replication (it stopped the agent daemon
        at start). The cloud then shows that VM's source as missing until it is fixed."""
        vms = []
        problems: dict[Path, str] = {}
        for p in sorted(self.vm_dir.glob("*.json")):
            try:
                vms.append(self.get(p.stem))
            except NotFound:
                continue
            except (ValidationFailed, InvalidName) as exc:
                problems[p] = exc.message
                if self._broken.get(p) != exc.message:
                    log.error("a VM definition is broken and its VM is left out of the inventory", extra={
                        "fields": {"file": str(p), "error": exc.message,
                                   "action": "correct or remove the file; the VM is listed again at the next "
                                             "inventory"}})
        self._broken = problems
        return vms

    @property
    def broken(self) -> dict[Path, str]:
        """The definitions the last :meth:`list` left out, and why."""
        return dict(self._broken)

    def create(
        self,
        name: str,
        os_disk: str,
        data_disks: Sequence[str] = (),
        guest_os: str = "ubuntu-22.04",
        generation: int = 1,
        cpus: int = 2,
        memory_mb: int = 2048,
        nics: Sequence[NicSpec] | None = None,
        os_controller: str = "IDE",
        data_controller: str = "SCSI",
        app_quiesce_hook: Sequence[str] | None = None,
    ) -> VmSpec:
        validate_name(name)
        check_guest_os(guest_os)
        if generation not in (1, 2):
            raise UsageError(f"generation {generation} is not 1 or 2")
        if cpus < 1 or memory_mb < 32:
            raise UsageError(f"{cpus} CPUs and {memory_mb} MB of memory are too few")
        paths = [os.path.abspath(p) for p in [os_disk, *data_disks]]
        if len(set(paths)) != len(paths):
            raise UsageError(f"VM {name}: the same disk image is given twice")
        disks = [disk_spec(paths[0], os_controller, True)]
        disks += [disk_spec(p, data_controller, False) for p in paths[1:]]
        vm = VmSpec(
            name=name, generation=generation, cpus=cpus, memory_mb=memory_mb,
            guest_os=guest_os, disks=disks,
            nics=list(nics) if nics is not None else [NicSpec("dhcp")],
            app_quiesce_hook=[*app_quiesce_hook] if app_quiesce_hook else None,
        )
        self._add(vm)
        return vm

    def _add(self, vm: VmSpec) -> None:
        self._check_disks_unused(vm)
        paths = self._paths(vm.name)
        try:
            # published whole and exclusively (a link that fails if the name is taken):
            # concurrent creates of one name are safe, and a reader never meets a
            # definition half written or reserved empty
            atomic_write_json(paths.definition, vm.to_dict(), exclusive=True)
        except FileExistsError as exc:
            raise AlreadyExists(f"VM {vm.name} already exists in {self.vm_dir}") from exc
        shutil.rmtree(paths.state, ignore_errors=True)  # leftovers of a deleted namesake

    def _check_disks_unused(self, vm: VmSpec, ignore: str | None = None) -> None:
        mine = {d.path for d in vm.disks}
        for other in self.list():
            if other.name in (vm.name, ignore):
                continue
            for d in other.disks:
                if d.path in mine:
                    raise AlreadyExists(f"disk image {d.path} already belongs to VM {other.name}")

    def import_vm(self, definition_file: str) -> VmSpec:
        """Register a VM from a definition JSON file; disk facts are re-read from the images."""
        try:
            data = json.loads(Path(definition_file).read_text())
        except FileNotFoundError as exc:
            raise NotFound(
                f"definition file {os.path.abspath(definition_file)} does not exist"
            ) from exc
        except ValueError as exc:
            raise ValidationFailed(
                f"definition file {os.path.abspath(definition_file)} is not JSON: {exc}"
            ) from exc
        vm = VmSpec.from_dict(data)
        validate_name(vm.name)
        check_guest_os(vm.guest_os)
        base = Path(definition_file).absolute().parent
        vm.disks = [
            disk_spec(str(base / d.path), d.controller, d.os_disk) for d in vm.disks
        ]
        vm.power_state = "Off"
        self._add(vm)
        return vm

    def update(
        self,
        name: str,
        add_data_disks: Sequence[str] = (),
        remove_disks: Sequence[int] = (),
        data_controller: str = "SCSI",
    ) -> VmSpec:
        """Add data disks and/or remove disks by index. Refused while a snapshot is open."""
        paths = self._paths(name)
        with vm_lock(paths):
            vm = self.get(name)
            if recover_stale(paths):
                raise StateConflict(f"VM {name} has an open snapshot; its disks cannot change")
            for i in remove_disks:
                if not 0 <= i < len(vm.disks):
                    raise NotFound(f"VM {name} has no disk {i}")
            keep = [d for i, d in enumerate(vm.disks) if i not in set(remove_disks)]
            added = [disk_spec(p, data_controller, False) for p in add_data_disks]
            vm.disks = keep + added
            self._check_disks_unused(vm)
            self._close_images(vm.vm_id)
            # dirty logs are per disk index: indices shift, so tracking starts over
            for log in paths.state.glob("disk*.dirty"):
                log.unlink()
            self._save(vm)
        return vm

    def delete(self, name: str) -> None:
        vm = self.get(name)
        if vm.power_state == "Running":
            raise StateConflict(f"VM {name} is running", action=f"Stop VM {name} first.")
        self._close_images(vm.vm_id)
        paths = self._paths(name)
        paths.definition.unlink()
        shutil.rmtree(paths.state, ignore_errors=True)

    def _set_power(self, name: str, state: str) -> VmSpec:
        paths = self._paths(name)
        with vm_lock(paths):
            vm = self.get(name)
            if state == "Running":
                marker = self._fence_marker(paths)
                if marker is not None:
                    raise refusal(name, marker, "it may not start here")
            if state == "Off":
                for i in range(len(vm.disks)):
                    image = self._images.get((vm.vm_id, i))
                    if image is not None:
                        image.flush()
                    tracking.sync(paths.dirty_log(i))
                self._close_images(vm.vm_id)
            if vm.power_state != state:
                vm.power_state = state
                self._save(vm)
        return vm

    def start(self, name: str) -> VmSpec:
        """Power on; refused with Fenced while the VM is fenced (see ``fence``)."""
        return self._set_power(name, "Running")

    def stop(self, name: str) -> VmSpec:
        return self._set_power(name, "Off")

    # -- fencing (see agent/hypervisor/fence.py) ----------------------------------------

    @staticmethod
    def _fence_marker(paths: VmPaths) -> dict[str, Any] | None:
        try:
            return read_marker(paths.fence.read_bytes())
        except FileNotFoundError:
            return None

    def fenced(self, name: str) -> dict[str, Any] | None:
        """The VM's fence marker, or None when it is not fenced."""
        return self._fence_marker(self._paths(name))

    def fence(self, name: str, reason: str, epoch: int, newer_epoch: int = 0) -> dict[str, Any]:
        """Mark this host's copy of the VM stale and power it off. The marker is durable, and
        written under the VM lock, before the power-off: no guest write lands after it. A VM
        already fenced keeps its first marker (the first reason is the informative one)."""
        vm = self.get(name)
        paths = self._paths(name)
        with vm_lock(paths):
            marker = self._fence_marker(paths)
            if marker is None:
                marker = {"vm": name, "vm_id": vm.vm_id, "reason": reason, "epoch": epoch,
                          "newer_epoch": newer_epoch, "fenced_at": self.clock.now()}
                write_atomic(paths.fence, (json.dumps(marker, indent=2) + "\n").encode())
        self.stop(name)
        return marker

    def unfence(self, name: str) -> bool:
        """Remove the fence marker (this host is the active side again); False if none."""
        paths = self._paths(name)
        self.get(name)
        with vm_lock(paths):
            try:
                paths.fence.unlink()
            except FileNotFoundError:
                return False
            fsync_dir(paths.state)
        return True

    def _close_images(self, vm_id: str) -> None:
        for key in [k for k in self._images if k[0] == vm_id]:
            self._images.pop(key).close()

    def close(self) -> None:
        for image in self._images.values():
            image.close()
        self._images.clear()

    # -- guest I/O and change tracking ---------------------------------------------------

    def _image(self, vm: VmSpec, disk: int) -> DiskImage:
        if not 0 <= disk < len(vm.disks):
            raise NotFound(f"VM {vm.name} has no disk {disk} (it has {len(vm.disks)})")
        key = (vm.vm_id, disk)
        image = self._images.get(key)
        if image is None:
            image = self._images[key] = open_disk(vm.disks[disk].path)
        return image

    def write(
        self, name: str, disk: int, offset: int, data: bytes, vm: VmSpec | None = None
    ) -> None:
        """A guest write: copy-on-write for an open snapshot, mark dirty, write the image."""
        vm = vm or self.get(name)
        if vm.power_state != "Running":
            self._not_running(name)
        image = self._image(vm, disk)
        if offset < 0 or offset + len(data) > image.virtual_size:
            raise UsageError(
                f"write {offset}+{len(data)} is outside disk {disk} of VM {name} "
                f"({image.virtual_size} bytes)"
            )
        blocks = tracking.blocks_touched(offset, len(data))
        paths = self._paths(name)
        with vm_lock(paths):
            # A caller may hold a stale definition (the workload re-reads it only now and
            # then): check the power state again under the lock that stop() takes, so no
            # write lands after a shutdown (planned failover's "no data loss").
            if self.get(name).power_state != "Running" or paths.fence.exists():
                self._not_running(name)
            preserve_before_write(paths, disk, blocks, image)
            # the bit goes down before the data: a crash may over-report, never under-report
            tracking.mark(paths.dirty_log(disk), blocks)
            image.write(offset, data)

    def _not_running(self, name: str) -> None:
        marker = self.fenced(name)
        if marker is not None:
            raise refusal(name, marker, "guest writes are refused")
        raise StateConflict(f"VM {name} is not running", action=f"Start VM {name} first.")

    def write_pattern(self, name: str, disk: int, offset: int, length: int, pattern: int) -> None:
        """``length`` bytes of ``pattern`` at ``offset``, as guest writes of at most
        PATTERN_PIECE bytes each. The range is checked against the disk first, so an absurd
        length is refused before anything is written or allocated."""
        vm = self.get(name)
        size = self._image(vm, disk).virtual_size
        if offset < 0 or length < 0:
            raise UsageError(f"offset {offset} and length {length} must not be negative "
                             f"(disk {disk} of VM {name} has {size} bytes)")
        if offset + length > size:
            raise UsageError(
                f"a write of {length} bytes at offset {offset} ends at byte {offset + length}, past the end "
                f"of disk {disk} of VM {name}, which has {size} bytes",
                action=f"Give --offset and --length with offset + length <= {size}.")
        piece = bytes([pattern]) * min(length, PATTERN_PIECE)
        done = 0
        while done < length:
            n = min(PATTERN_PIECE, length - done)
            self.write(name, disk, offset + done, piece[:n], vm=vm)
            done += n

    def read(self, name: str, disk: int, offset: int, length: int) -> bytes:
        vm = self.get(name)
        with vm_lock(self._paths(name)):
            return self._image(vm, disk).read(offset, length)

    def mark_all_dirty(self, name: str) -> None:
        vm = self.get(name)
        paths = self._paths(name)
        with vm_lock(paths):
            for i, d in enumerate(vm.disks):
                size = probe(d.path).virtual_size
                tracking.write_log(paths.dirty_log(i), size, tracking.all_dirty(size))

    def track_from_now(self, name: str) -> None:
        """Start every disk's change tracking clean (a VM made of disks whose content is known,
        e.g. a failover VM on replica disks: what it writes from now on is then known too)."""
        vm = self.get(name)
        paths = self._paths(name)
        with vm_lock(paths):
            paths.state.mkdir(parents=True, exist_ok=True)
            for i, d in enumerate(vm.disks):
                tracking.write_log(paths.dirty_log(i), probe(d.path).virtual_size)

    def _dirty_bits(self, name: str) -> builtins.list[bytes | None]:
        """Each disk's dirty bitmap (None where its log cannot be trusted)."""
        vm = self.get(name)
        paths = self._paths(name)
        with vm_lock(paths):
            return [tracking.read_log(paths.dirty_log(i), probe(d.path).virtual_size) for i, d in enumerate(vm.disks)]

    def written_blocks(self, name: str) -> builtins.list[builtins.list[int]] | None:
        """The blocks written to each disk since tracking started; None when any disk's log
        cannot be trusted (missing, or left unsynced by a crash)."""
        out = []
        for bits in self._dirty_bits(name):
            if bits is None:
                return None
            out.append(tracking.bits_to_list(bits))
        return out

    def reset_tracking(self, name: str, disk: int | None = None) -> None:
        """Forget tracking (of one disk or all): the next snapshot reports it untracked."""
        vm = self.get(name)
        paths = self._paths(name)
        with vm_lock(paths):
            for i in range(len(vm.disks)) if disk is None else [disk]:
                paths.dirty_log(i).unlink(missing_ok=True)

    def tracking_state(self, name: str) -> builtins.list[dict[str, Any]]:
        snapshot_open = self._paths(name).snap.exists()
        return [{"disk": i, "tracked": bits is not None,
                 "dirty_blocks": None if bits is None else len(tracking.bits_to_list(bits)),
                 "snapshot_open": snapshot_open}
                for i, bits in enumerate(self._dirty_bits(name))]

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self, name: str, app_consistent: bool = False) -> Snapshot:
        """A snapshot of every disk at one instant; app-consistent ones run the VM's quiesce
        hook first and raise QuiesceFailed (nothing taken) when it fails."""
        vm = self.get(name)
        if app_consistent and vm.app_quiesce_hook:
            quiesce.run_hook(vm.app_quiesce_hook)
        images = [open_disk(d.path, readonly=True) for d in vm.disks]
        try:
            return take_snapshot(self._paths(name), name, images, self.clock, app_consistent)
        except BaseException:
            for image in images:
                image.close()
            raise

    def recover(self) -> builtins.list[str]:
        """At agent start: drop snapshots left open by dead processes (returns their VM
        names), and power off a fenced VM still marked running."""
        recovered = []
        state = self.vm_dir / STATE_DIR
        for vm in self.list():
            paths = self._paths(vm.name)
            if not (state / vm.name).exists():
                continue
            with vm_lock(paths):
                had = paths.snap.exists() or paths.snap_tmp.exists()
                if not recover_stale(paths) and had:
                    recovered.append(vm.name)
            if vm.power_state == "Running" and paths.fence.exists():
                self.stop(vm.name)  # fenced, then the process died before the power-off
        return recovered

