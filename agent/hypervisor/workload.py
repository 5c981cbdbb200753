"""A synthetic guest workload: paced writes through the local hypervisor's write path.

With ``sequence_numbers`` every write starts with a header (magic, global write number k,
disk index) so a test can check crash consistency: a snapshot must show exactly the effect
of writes 0..K for some K. The plan (which disk and offset write k goes to) depends only on
the seed, the disk sizes, the block size and the pattern, so a checker can replay it with
:func:`plan`.
"""

from __future__ import annotations

import math
import random
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from asrerrors import UsageError

from .local import LocalHypervisor

SEQ_MAGIC = b"ASRSEQ01"
SEQ_HEADER = struct.Struct("<8sQI")


@dataclass
class WorkloadResult:
    writes: int
    bytes_written: int
    seconds: float


def plan(
    seed: int, disk_sizes: Sequence[int], block_size: int, pattern: str
) -> Iterator[tuple[int, int, int]]:
    """Yield (k, disk, offset) forever; offsets are multiples of ``block_size``."""
    rng = random.Random(seed)
    slots = [size // block_size for size in disk_sizes]
    cursor = [0] * len(disk_sizes)
    k = 0
    while True:
        if pattern == "random":
            disk = rng.randrange(len(slots))
            slot = rng.randrange(slots[disk])
        else:
            disk = k % len(slots)
            slot = cursor[disk]
            cursor[disk] = (slot + 1) % slots[disk]
        yield k, disk, slot * block_size
        k += 1


def payload(k: int, disk: int, block_size: int, sequence_numbers: bool) -> bytes:
    fill = bytes([k % 251 + 1]) * block_size
    if not sequence_numbers:
        return fill
    head = SEQ_HEADER.pack(SEQ_MAGIC, k, disk)
    return head + fill[len(head):]


def parse_header(data: bytes) -> tuple[int, int] | None:
    """(k, disk) of a sequence-numbered write at the start of ``data``, if there is one."""
    if len(data) < SEQ_HEADER.size or data[:8] != SEQ_MAGIC:
        return None
    _, k, disk = SEQ_HEADER.unpack_from(data)
    return k, disk


def run_workload(
    hv: LocalHypervisor,
    name: str,
    rate_mb_s: float,
    block_size: int = 4096,
    pattern: str = "random",
    duration_s: float = 10.0,
    seed: int = 0,
    sequence_numbers: bool = False,
    max_writes: int | None = None,
) -> WorkloadResult:
    if pattern not in ("random", "sequential"):
        raise UsageError(f"pattern {pattern!r} is not random or sequential")
    if block_size < 512 or block_size % 512 or (sequence_numbers and block_size < 32):
        raise UsageError(f"block size {block_size} must be a positive multiple of 512")
    if not math.isfinite(rate_mb_s) or rate_mb_s <= 0:
        raise UsageError(f"--rate {rate_mb_s} is not allowed: the rate must be a finite number of MB/s "
                         "greater than 0 (e.g. 2 or 0.5)")
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise UsageError(f"--duration {duration_s} is not allowed: the duration must be a finite number of "
                         "seconds greater than 0")
    if max_writes is not None and max_writes < 0:
        raise UsageError(f"--max-writes {max_writes} must not be negative")
    vm = hv.get(name)
    sizes = [d.virtual_size for d in vm.disks]
    if any(size < block_size for size in sizes):
        raise UsageError(f"a disk of VM {name} is smaller than the block size {block_size}")
    interval = block_size / (rate_mb_s * 1_000_000)
    start = time.monotonic()  # pacing is real time: the workload models a running guest
    done = 0
    for k, disk, offset in plan(seed, sizes, block_size, pattern):
        now = time.monotonic()
        if now - start >= duration_s or (max_writes is not None and k >= max_writes):
            break
        due = start + k * interval
        if due > now:
            time.sleep(due - now)
        # re-read the definition now and then so 'vm stop' from elsewhere ends the workload
        if k % 256 == 0:
            vm = hv.get(name)
        hv.write(name, disk, offset, payload(k, disk, block_size, sequence_numbers), vm=vm)
        done += 1
    return WorkloadResult(done, done * block_size, time.monotonic() - start)
