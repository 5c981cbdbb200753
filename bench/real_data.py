"""Replication of a real file system, against rsync, restic and borg on the same raw images.

An ext4 image is filled (loop mount, as root) with files of this machine (/usr/share/doc,
/usr/lib/python3*, /var/log, /usr/share, /usr/bin, ...) until about half of it is allocated;
its content is written through the local hypervisor's guest path into a protected VM's dynamic
VHDX and replicated by a real cloud service, provider and agent (``python -m agent.replication
once``, as ``bench/replication_scale.py``). Then a day of work changes the mounted file system:
packages replaced (files rewritten under new names, the old ones deleted), files deleted, new
files added, logs grown, text files edited by an editor's save (new file, rename). Exactly the
64 KiB blocks that differ between the two raw images are written through the guest path (so the
agent's change tracking sees what a guest would have written), and the second cycle ships them.

Peers run on a raw copy of the same images in the same run, right after each of our cycles:
``rsync --inplace --no-whole-file`` into a local copy, ``restic backup`` and ``borg create``
(both into a fresh repository, then again after the day's change). Reported for every tool:
seconds, bytes sent (rsync: ``Total bytes sent``; restic: data added; borg: deduplicated size;
ours: frames shipped), bytes stored, and CPU seconds of each process (the peers' rusage with
their children; the agent's ``once`` process; the cloud service's, provider's and agent
daemon's /proc deltas over the cycle). Figures, not a test. Page cache is warm for everyone.

    .venv/bin/python bench/real_data.py [--size-mib 2048] [--fill 0.5] [--change 0.015]
                                        [--compression fast|balanced|strong]
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.hypervisor import LocalHypervisor  # noqa: E402
from bench.replication_scale import cpu_seconds, dir_bytes, once  # noqa: E402
from chunkfmt import COMPRESSION, DEFAULT_COMPRESSION  # noqa: E402
from tests.harness import Cloud, Procs  # noqa: E402
from tests.replication.fixture import MiB, protect  # noqa: E402

BLOCK = 65536
# real files of this machine, in the order they fill the image
SOURCES = ["/usr/share/doc", "/usr/lib/python3.11", "/usr/lib/python3", "/var/log", "/usr/share", "/usr/bin",
           "/usr/lib/x86_64-linux-gnu", "/usr/lib"]


def files_of(sources: list[str]) -> Iterator[tuple[Path, Path]]:
    """(source file, path inside the image) for every regular file, each once."""
    seen: set[Path] = set()
    for top in sources:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                src = Path(dirpath) / name
                if src in seen or src.is_symlink() or not src.is_file():
                    continue
                seen.add(src)
                yield src, Path(str(src).lstrip("/"))


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


class Mounted:
    """The image loop-mounted at ``mnt`` (as root), unmounted and synced on exit."""

    def __init__(self, image: Path, mnt: Path) -> None:
        self.image, self.mnt = image, mnt

    def __enter__(self) -> Path:
        self.mnt.mkdir(exist_ok=True)
        sh("mount", "-o", "loop", str(self.image), str(self.mnt))
        return self.mnt

    def __exit__(self, *exc: object) -> None:
        sh("umount", str(self.mnt))


def build(image: Path, mnt: Path, size: int, fill: float) -> tuple[int, list[tuple[Path, Path]]]:
    """Fill a new ext4 image with real files up to ``fill`` of its size; returns the files
    copied and the host files left over (new files for the day of change)."""
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image),
       f"{size // 1024}k")
    budget = int(size * fill)
    used = 0
    spare: list[tuple[Path, Path]] = []
    copied = 0
    with Mounted(image, mnt):
        for src, rel in files_of(SOURCES):
            n = src.stat().st_size
            if used + n > budget:
                spare.append((src, rel))
                if len(spare) > 20000:
                    break
                continue
            dst = mnt / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            used += n
            copied += 1
    return copied, spare


def text_like(path: Path) -> bool:
    return path.suffix in {".py", ".txt", ".md", ".html", ".css", ".js", ".json", ".xml", ".conf", ".rst"}


def day_of_change(mnt: Path, spare: list[tuple[Path, Path]], change: float, rng: random.Random) -> dict[str, int]:
    """A day of work in the mounted file system, about ``change`` of the allocated bytes:
    40% packages replaced, 25% new files, 15% deleted, 10% logs grown, 10% files edited."""
    files = sorted(p for p in mnt.rglob("*") if p.is_file() and not p.is_symlink() and "lost+found" not in p.parts)
    total = sum(p.stat().st_size for p in files)
    budget = int(total * change)
    done = {"packages_replaced_bytes": 0, "added_bytes": 0, "deleted_bytes": 0, "log_bytes": 0, "edited_files": 0}
    # packages replaced: a package's files rewritten as a new version (dpkg writes new files
    # and renames them over the old: new blocks), text edited near the top, binaries changed
    # every 4 KiB
    pkgs = sorted({p.parent for p in files if "python3" in str(p)})
    rng.shuffle(pkgs)
    for pkg in pkgs:
        if done["packages_replaced_bytes"] >= budget * 0.4:
            break
        for f in sorted(pkg.iterdir()):
            if not f.is_file() or f.is_symlink():
                continue
            data = bytearray(f.read_bytes())
            if text_like(f):
                data[0:0] = b"# upgraded: version 2.1-1\n"
            else:
                for off in range(0, len(data), 4096):
                    data[off] ^= 0xFF
            tmp = f.with_name(f.name + ".dpkg-new")
            tmp.write_bytes(bytes(data))
            os.replace(tmp, f)
            done["packages_replaced_bytes"] += len(data)
    # files added: host files not yet in the image
    for src, rel in spare:
        if done["added_bytes"] + src.stat().st_size > budget * 0.25:
            continue   # the leftovers include big files: one would overshoot the day
        dst = mnt / "srv" / "new" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        done["added_bytes"] += src.stat().st_size
    # files deleted
    victims = [p for p in files if p.exists() and "python3" not in str(p)]
    rng.shuffle(victims)
    for f in victims:
        if done["deleted_bytes"] >= budget * 0.15:
            break
        done["deleted_bytes"] += f.stat().st_size
        f.unlink()
    # logs grown: appended lines, like a service logging all day
    logs = [mnt / "var" / "log" / f"app{i}.log" for i in range(4)]
    for p in logs:
        p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    while done["log_bytes"] < budget * 0.1:
        line = (f"2026-11-30T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z host app[{rng.randrange(9999)}]: "
                f"request {rng.getrandbits(64):016x} served in {rng.random() * 50:.2f} ms status 200\n").encode()
        with open(logs[n % len(logs)], "ab") as fh:
            fh.write(line * 50)
        done["log_bytes"] += len(line) * 50
        n += 1
    # files edited: an editor's save (write a new file, rename it over the old one)
    texts = [p for p in files if p.exists() and text_like(p) and "python3" not in str(p)]
    rng.shuffle(texts)
    edited = 0
    for f in texts:
        if edited >= budget * 0.1:
            break
        text = f.read_bytes()
        mid = len(text) // 2
        tmp = f.with_name("." + f.name + ".swp")
        tmp.write_bytes(text[:mid] + b"\nedited today\n" + text[mid:])
        os.replace(tmp, f)
        edited += len(text)
        done["edited_files"] += 1
    done["allocated_file_bytes_before"] = total
    return done


def allocated(image: Path) -> int:
    """Non-zero 64 KiB blocks of a raw image, in bytes (what a copy has to read and ship)."""
    n = 0
    with open(image, "rb") as f:
        while chunk := f.read(16 * MiB):
            view = memoryview(chunk)
            for off in range(0, len(chunk), BLOCK):
                if view[off:off + BLOCK].tobytes().count(0) != min(BLOCK, len(chunk) - off):
                    n += BLOCK
    return n


def changed_blocks(old: Path, new: Path) -> list[int]:
    out = []
    with open(old, "rb") as a, open(new, "rb") as b:
        base = 0
        while True:
            x, y = a.read(16 * MiB), b.read(16 * MiB)
            if not x:
                break
            if x != y:
                for off in range(0, len(x), BLOCK):
                    if x[off:off + BLOCK] != y[off:off + BLOCK]:
                        out.append((base + off) // BLOCK)
            base += len(x)
    return out


def codec_floor(image: Path, blocks: list[int]) -> dict[str, float]:
    """The CPU the day's cycle cannot avoid with this format: the keyed BLAKE3 id and the zstd-1
    frame of every changed block, on one thread (``time.thread_time``), the image in the page
    cache. Divided by the cores it is the floor of the transfer phase on this machine."""
    from chunkfmt import chunk_id, encode_chunk

    key = bytes(32)
    with open(image, "rb") as f:
        data = []
        for b in blocks:
            f.seek(b * BLOCK)
            data.append(f.read(BLOCK))
    t = time.thread_time()
    for d in data:
        chunk_id(key, d)
    hashed = time.thread_time() - t
    t = time.thread_time()
    framed = sum(len(encode_chunk(d, None)) for d in data)
    encoded = time.thread_time() - t
    cores = os.cpu_count() or 1
    return {"hash_cpu_s": round(hashed, 4), "zstd1_cpu_s": round(encoded, 4), "framed_bytes": framed,
            "cores": cores, "floor_s": round((hashed + encoded) / cores, 4)}


def guest_write_all(hv: LocalHypervisor, image: Path) -> None:
    """The whole image through the guest path, 1 MiB at a time; all-zero pieces stay unallocated."""
    zero = bytes(MiB)
    with open(image, "rb") as f:
        off = 0
        while piece := f.read(MiB):
            if piece != zero[:len(piece)]:
                hv.write("vm1", 0, off, piece)
            off += len(piece)


def guest_write_blocks(hv: LocalHypervisor, image: Path, blocks: list[int]) -> None:
    with open(image, "rb") as f:
        for b in blocks:
            f.seek(b * BLOCK)
            hv.write("vm1", 0, b * BLOCK, f.read(BLOCK))


def measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Seconds, CPU seconds (with waited-for children) and stdout of a peer."""
    t = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read().decode(errors="replace")
    err = proc.stderr.read().decode(errors="replace")
    _, status, ru = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - t
    assert os.waitstatus_to_exitcode(status) == 0, f"{argv[0]} failed: {err}"
    return seconds, ru.ru_utime + ru.ru_stime, out


class Peers:
    """rsync, restic and borg on one raw disk file, repositories and copies under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.disk = root / "peer-disk.raw"
        self.env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(root / "restic"),
                        RESTIC_CACHE_DIR=str(root / "restic-cache"), BORG_PASSPHRASE="bench",
                        BORG_REPO=str(root / "borg"), BORG_BASE_DIR=str(root / "borg-home"))
        subprocess.run(["restic", "init"], check=True, capture_output=True, env=self.env)
        subprocess.run(["borg", "init", "-e", "repokey"], check=True, capture_output=True, env=self.env)
        self.version = 0

    def run(self, image: Path) -> dict[str, dict[str, float]]:
        """Back the disk up with each peer (``image``'s content copied over the same path)."""
        sh("cp", "--sparse=always", str(image), str(self.disk))
        self.version += 1
        out: dict[str, dict[str, float]] = {}
        s, cpu, text = measured(["rsync", "--inplace", "--no-whole-file", "--stats", str(self.disk),
                                 str(self.root / "rsync-dst.raw")])
        sent = re.search(r"Total bytes sent: ([\d,]+)", text)
        out["rsync"] = {"seconds": round(s, 3), "cpu_s": round(cpu, 2),
                        "bytes_sent": int(sent.group(1).replace(",", "")) if sent else -1,
                        "bytes_stored": (self.root / "rsync-dst.raw").stat().st_blocks * 512}
        s, cpu, text = measured(["restic", "backup", "--json", str(self.disk)], self.env)
        summary = [json.loads(line) for line in text.splitlines() if '"summary"' in line][-1]
        out["restic"] = {"seconds": round(s, 3), "cpu_s": round(cpu, 2), "bytes_sent": summary["data_added"],
                         "bytes_stored": dir_bytes(self.root / "restic")}
        s, cpu, text = measured(["borg", "create", "--json", f"::v{self.version}", str(self.disk)], self.env)
        stats = json.loads(text)["archive"]["stats"]
        out["borg"] = {"seconds": round(s, 3), "cpu_s": round(cpu, 2), "bytes_sent": stats["deduplicated_size"],
                       "bytes_stored": dir_bytes(self.root / "borg")}
        return out


def ours(p: Any, pids: dict[str, int], root: Path) -> dict[str, Any]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    res = once(p, pids["cloudsvc"])
    return {"seconds": round(res["seconds"], 3), "bytes_sent": res["bytes_sent"],
            "bytes_stored": dir_bytes(root / "cloud" / "storage"), "blocks_read": res["blocks_read"],
            "blocks_changed": res["blocks_changed"], "agent_once_cpu_s": res["agent_cpu_s"],
            **{f"{name}_cpu_s": round(cpu_seconds(pid) - before[name], 2) for name, pid in pids.items()},
            "phases_s": {k: round(v, 3) for k, v in res.get("phases", {}).items()},
            # opened before the cycle, as a daemon's cycles find them (agent/replication/__main__.py)
            "connect_s": res.get("connect_s")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=2048, help="the image's size")
    ap.add_argument("--fill", type=float, default=0.5, help="fraction of the image filled with files")
    ap.add_argument("--change", type=float, default=0.015, help="a day's change, fraction of the files' bytes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--compression", choices=list(COMPRESSION), default=DEFAULT_COMPRESSION,
                    help="the protection policy's compression")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: the image is loop-mounted to fill and change it", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-real-"))
    procs = Procs(root)
    size = args.size_mib * MiB
    out: dict[str, Any] = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python "
                                      f"{platform.python_version()}, {platform.release()}",
                           "size_mib": args.size_mib, "compression": args.compression}
    try:
        image, v1 = root / "image.raw", root / "v1.raw"
        t = time.monotonic()
        copied, spare = build(image, root / "mnt", size, args.fill)
        sh("cp", "--sparse=always", str(image), str(v1))
        alloc = allocated(v1)
        out["image"] = {"files": copied, "allocated_bytes": alloc, "build_s": round(time.monotonic() - t, 1)}
        cloud = Cloud(procs, root / "cloud").start()
        p = protect(cloud, root, os_size=size, fill=False, compression=args.compression)
        assert cloud.proc is not None and p.site.provider_proc is not None
        pids = {"cloudsvc": cloud.proc.popen.pid, "provider": p.site.provider_proc.popen.pid,
                "agent_daemon": p.site.agents["hv01"].popen.pid}
        hv = LocalHypervisor(str(p.site.root / "hv01" / "vms"))
        guest_write_all(hv, v1)
        peers = Peers(root)
        first = ours(p, pids, root)
        first["MBps_allocated"] = round(alloc / first["seconds"] / 1e6, 1)
        out["initial"] = {"ours": first, **peers.run(v1)}
        with Mounted(image, root / "mnt") as mnt:
            out["day"] = day_of_change(mnt, spare, args.change, random.Random(args.seed))
        blocks = changed_blocks(v1, image)
        out["day"]["blocks_changed"] = len(blocks)
        out["day"]["fraction_of_allocated_blocks"] = round(len(blocks) * BLOCK / alloc, 4)
        out["day"]["codec_floor"] = codec_floor(image, blocks)
        guest_write_blocks(hv, image, blocks)
        out["day_cycle"] = {"ours": ours(p, pids, root), **peers.run(image)}
        hv.close()
        # the point must equal the disk: exported and compared by qemu-img
        pts = p.points()
        latest = max(pts, key=lambda x: x["created_at"])
        exported = p.export(latest["point_id"], 0, root / "export.raw")
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(exported), str(image)],
                             capture_output=True, text=True)
        out["latest_point_equals_image"] = cmp.returncode == 0
        ini, day = out["initial"], out["day_cycle"]
        out["ratios"] = {
            "initial_rsync_over_ours": round(ini["rsync"]["seconds"] / ini["ours"]["seconds"], 2),
            "initial_restic_over_ours": round(ini["restic"]["seconds"] / ini["ours"]["seconds"], 2),
            "initial_borg_over_ours": round(ini["borg"]["seconds"] / ini["ours"]["seconds"], 2),
            "day_rsync_over_ours": round(day["rsync"]["seconds"] / day["ours"]["seconds"], 1),
            "day_restic_over_ours": round(day["restic"]["seconds"] / day["ours"]["seconds"], 1),
            "day_borg_over_ours": round(day["borg"]["seconds"] / day["ours"]["seconds"], 1),
            # the cycle time that 20x restic asks for, against the codec's CPU floor above
            "day_restic_over_20_s": round(day["restic"]["seconds"] / 20, 3),
            "stored_ours_over_restic": round(day["ours"]["bytes_stored"] / day["restic"]["bytes_stored"], 3),
        }
    finally:
        procs.stop_all()
        if os.path.ismount(root / "mnt"):
            subprocess.run(["umount", str(root / "mnt")], check=False)
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
