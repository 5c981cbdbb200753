"""Load: one cloud service, one provider and 8 agent daemons with 25 protected VMs each (200
VMs), copy frequency 30 s, a sequence-numbered workload on every VM. Figures, not a test.

Every VM is a small dynamic VHDX on the local hypervisor. After the first copies, the bench
writes a record ``<vm> seq <n>`` into every VM through the guest path every
``--write-interval`` seconds (4 KiB at block ``n % 256``), and samples every 5 s: each VM's RPO
and health (``ListVms``), the daemons' CPU and RSS (/proc), the metadata databases' size. At
the end it reports per VM RPO p50/p99/max, missed cycles (gaps between consecutive points
longer than 1.5 intervals, counted in intervals), health changes; the cloud's RPC latency
p99 per method (from its ``grpc_server_handling_seconds`` histogram, delta over the measured
window); CPU seconds, peak RSS and RSS slope of every daemon; the metadata growth per day
extrapolated. Then the workload stops, every VM gets a point after its last write, and each
VM's latest point is exported and compared with its disk by ``qemu-img compare``.

    .venv/bin/python bench/load.py                 # 5 minutes measured
    .venv/bin/python bench/load.py --long          # 30 minutes
    .venv/bin/python bench/load.py --hosts 2 --vms-per-host 3 --minutes 1   # a quick look
    .venv/bin/python bench/load.py --minutes 2 --engine postgresql --services 2   # issue 15
    .venv/bin/python bench/load.py --compression strong   # group frames under load (exports compared)

``--engine postgresql``: the metadata in a throw-away PostgreSQL server (``tests/pgserver.py``;
its own processes' CPU is not in the daemons' figures). ``--services 2``: a second cloud
service B over the same metadata and storage account (``Cloud.clone``); the provider and the
odd-numbered hosts' agents call A, the even-numbered hosts' agents call B.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from agent.hypervisor import LocalHypervisor  # noqa: E402
from asrcli.client import Client  # noqa: E402
from asrpb import operator_pb2  # noqa: E402
from bench.replication_scale import cpu_seconds, status_kib  # noqa: E402
from chunkfmt import COMPRESSION, DEFAULT_COMPRESSION  # noqa: E402
from tests.harness import Cloud, Procs, Site, free_port, wait_for  # noqa: E402
from tests.replication.fixture import MiB, qemu  # noqa: E402
from tests.scaleout.fixture import point_to  # noqa: E402

BLOCK = 65536
SAMPLE_S = 5.0


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def slope_fit(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of (seconds, KiB) samples and its standard error, both in MiB per
    minute: a slope within about two standard errors of zero is within the run's noise."""
    if len(samples) < 3:
        return 0.0, 0.0
    xs, ys = [t for t, _ in samples], [v for _, v in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if not den:
        return 0.0, 0.0
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den
    residual = sum((y - my - b * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    se = (residual / (len(xs) - 2) / den) ** 0.5
    return b / 1024 * 60, se / 1024 * 60


def per_minute_mib(samples: list[tuple[float, float]]) -> list[float]:
    """The RSS trace as one mean per minute of the run, so a reader sees its shape (a step
    after the first copies, a plateau, a climb) and not only the fitted slope."""
    minutes: dict[int, list[float]] = defaultdict(list)
    for t, v in samples:
        minutes[int(t // 60)].append(v)
    return [round(statistics.fmean(minutes[m]) / 1024, 1) for m in sorted(minutes)]


def memory_figures(samples: list[tuple[float, float]], horizon_s: float) -> dict[str, Any]:
    """A daemon's RSS over the run: slope, slope of the second half (after the first copies'
    buffers went back to the system) with its standard error, first and last, per minute;
    and the slope past the retention horizon (``horizon_s`` into the run), where points and
    chunks leave as fast as they arrive, when the run lasts 10 minutes beyond it."""
    slope = slope_fit(samples)[0]
    half, half_se = slope_fit(samples[len(samples) // 2:])
    out = {"rss_slope_mib_per_min": round(slope, 3),
           "rss_slope_second_half_mib_per_min": round(half, 3),
           "rss_slope_second_half_stderr": round(half_se, 3),
           "rss_first_last_mib": [round(samples[0][1] / 1024, 1), round(samples[-1][1] / 1024, 1)],
           "rss_per_minute_mib": per_minute_mib(samples)}
    past = [(t, v) for t, v in samples if t >= horizon_s]
    if past and past[-1][0] - past[0][0] >= 600:
        slope, se = slope_fit(past)
        out.update(rss_slope_past_horizon_mib_per_min=round(slope, 3), rss_slope_past_horizon_stderr=round(se, 3))
    return out


def scrape(port: int) -> dict[tuple[str, float], float]:
    """The cloud's ``grpc_server_handling_seconds`` buckets: (method, le) -> count."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[tuple[str, float], float] = defaultdict(float)
    for fam in text_string_to_metric_families(text):
        if fam.name != "grpc_server_handling_seconds":
            continue
        for s in fam.samples:
            if s.name.endswith("_bucket"):
                out[(s.labels["grpc_method"], float(s.labels["le"]))] += s.value
    return out


def latency_p99(before: dict[tuple[str, float], float], after: dict[tuple[str, float], float]
                ) -> dict[str, dict[str, float]]:
    """Per method: calls and the p99 (the upper bound of the bucket that holds it), over the
    window between the two scrapes."""
    methods = {m for m, _ in after}
    res = {}
    for m in sorted(methods):
        buckets = sorted((le, after[(m, le)] - before.get((m, le), 0.0)) for mm, le in after if mm == m)
        total = buckets[-1][1]
        if total <= 0:
            continue
        p99 = next(le for le, n in buckets if n >= 0.99 * total)
        res[m] = {"calls": int(total), "p99_s": p99}
    return res


def db_bytes(cloud: Cloud) -> int:
    # the databases themselves: a WAL file grows and is truncated at checkpoints (noise); the
    # storage accounts' chunk indexes are SQLite files whichever the metadata engine
    files = sum(f.stat().st_size for f in cloud.data_dir.rglob("*.db") if f.is_file())
    if not cloud.database_url:
        return files
    return files + int(cloud.sql("SELECT pg_database_size(current_database())")[0][0])


def metrics_port(cloud: Cloud) -> int:
    import tomllib

    return int(tomllib.loads((cloud.data_dir / "cloudsvc.toml").read_text())["metrics_listen"].rpartition(":")[2])


class Workload(threading.Thread):
    """Writes ``<vm> seq <n>`` records into every VM through the guest path."""

    def __init__(self, hvs: dict[str, LocalHypervisor], vms: dict[str, str], interval: float) -> None:
        super().__init__(daemon=True)
        self.hvs, self.vms, self.interval = hvs, vms, interval
        self.seq: dict[str, int] = dict.fromkeys(vms, 0)
        self.stop_flag = threading.Event()
        self.lag_s = 0.0   # how far the writer fell behind its schedule, at worst

    def run(self) -> None:
        nxt = time.monotonic()
        while not self.stop_flag.is_set():
            for vm, host in self.vms.items():
                n = self.seq[vm] + 1
                record = f"{vm} seq {n}\n".encode().ljust(4096, b".")
                self.hvs[host].write(vm, 0, (n % 256) * BLOCK, record)
                self.seq[vm] = n
            nxt += self.interval
            self.lag_s = max(self.lag_s, time.monotonic() - nxt)
            self.stop_flag.wait(max(0.0, nxt - time.monotonic()))


def sample_daemons(pids: dict[str, int], t0: float, rss: dict[str, list[tuple[float, float]]]) -> None:
    now = time.monotonic() - t0
    for name, pid in pids.items():
        try:
            rss[name].append((now, status_kib(pid, "VmRSS")))
        except (OSError, ValueError):
            pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--vms-per-host", type=int, default=25)
    ap.add_argument("--minutes", type=float, default=5.0, help="the measured run (after the first copies)")
    ap.add_argument("--long", action="store_true", help="a 30-minute run (memory slope)")
    ap.add_argument("--disk-mib", type=int, default=64)
    ap.add_argument("--write-interval", type=float, default=1.0, help="seconds between a VM's records")
    ap.add_argument("--engine", choices=["sqlite", "postgresql"], default="sqlite", help="the metadata engine")
    ap.add_argument("--services", type=int, choices=[1, 2], default=1, help="cloud services sharing the metadata")
    ap.add_argument("--retention-hours", type=int, default=1,
                    help="the policy's retention; 0 keeps only each VM's latest point, so retention and GC "
                         "free chunks as fast as cycles add them (the steady state, within minutes)")
    ap.add_argument("--compression", choices=list(COMPRESSION), default=DEFAULT_COMPRESSION,
                    help="the policy's compression")
    args = ap.parse_args()
    minutes = 30.0 if args.long else args.minutes
    freq = 30
    root = Path(tempfile.mkdtemp(prefix="bench-load-"))
    procs = Procs(root)
    out: dict[str, Any] = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
                           "hosts": args.hosts, "vms": args.hosts * args.vms_per_host, "minutes": minutes,
                           "engine": args.engine, "services": args.services, "retention_hours": args.retention_hours,
                           "compression": args.compression,
                           "load_average_before": os.getloadavg()}
    hvs: dict[str, LocalHypervisor] = {}
    pg = None
    try:
        t_setup = time.monotonic()
        url = ""
        if args.engine == "postgresql":
            from tests.pgserver import PgServer

            pg = PgServer().init()
            url = pg.new_database()
        cloud = Cloud(procs, root / "cloud", database_url=url)
        mport = free_port()
        cfg = cloud.data_dir / "cloudsvc.toml"
        cfg.write_text(cfg.read_text().replace('metrics_listen = ""', f'metrics_listen = "127.0.0.1:{mport}"'))
        cloud.start()
        clouds = [cloud] if args.services == 1 else [cloud, cloud.clone(root / "cloud-b").start()]
        cloud.asr("vault", "create", "contoso", "--region", "japaneast")
        cloud.asr("storage", "create", "store1", "--vault", "contoso", "--region", "japaneast")
        site = Site(cloud, root, "contoso")
        site.new_key()
        assert site.register_provider("prov1").returncode == 0
        hosts = [f"hv{i + 1:02d}" for i in range(args.hosts)]
        vms: dict[str, str] = {}   # name -> host
        base = root / "base.vhdx"
        qemu("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", str(base),
             str(args.disk_mib * MiB))
        for k, h in enumerate(hosts):
            assert site.register_agent(h).returncode == 0, h
            point_to(root / h, clouds[k % len(clouds)])
            site.agent_config(h)
            hv = hvs[h] = LocalHypervisor(str(root / h / "vms"))
            (root / h / "disks").mkdir(parents=True, exist_ok=True)
            for j in range(args.vms_per_host):
                name = f"{h}-vm{j:02d}"
                disk = root / h / "disks" / f"{name}.vhdx"
                shutil.copyfile(base, disk)
                hv.create(name, str(disk), guest_os="windows-server-2019")
                hv.start(name)
                hv.write(name, 0, 0, os.urandom(MiB))   # a little content for the first copy
                vms[name] = h
        site.start_provider(clouds=[{"name": "gold", "hosts": hosts, "sync": True}])
        for h in hosts:
            site.start_agent(h)
        client = Client(cloud.endpoint, str(cloud.credentials))

        def listed() -> dict[str, Any]:
            return {v.vm.name: v for v in client.call(client.protection.ListVms,
                                                      operator_pb2.ListVmsRequest(vault="contoso")).vms}

        wait_for(lambda: len(listed()) == len(vms), 300, interval=1, what="every VM in the vault")
        assert cloud.asr_json("cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1",
                              "--copy-frequency", "30s", "--retention-hours", str(args.retention_hours),
                              "--start", "now", "--compression", args.compression,
                              "--wait")["state"] == "Succeeded"
        for name in vms:
            client.call(client.protection.ProtectVm, operator_pb2.ProtectVmRequest(vault="contoso", vm=name))
        wait_for(lambda: all(v.protection_state == "Protected" and v.last_replication > 0
                             for v in listed().values()), 1800, interval=2, what="every VM protected and copied")
        out["setup_s"] = round(time.monotonic() - t_setup, 1)

        assert cloud.proc is not None and site.provider_proc is not None
        pids = {**{c.name: c.proc.popen.pid for c in clouds if c.proc is not None},
                "provider": site.provider_proc.popen.pid, **{f"agent-{h}": site.agents[h].popen.pid for h in hosts}}
        work = Workload(hvs, vms, args.write_interval)
        work.start()
        t0 = time.monotonic()
        wall0 = time.time()
        cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
        hist0 = {c.name: scrape(metrics_port(c)) for c in clouds}
        db0 = db_bytes(cloud)
        rpo: dict[str, list[float]] = defaultdict(list)
        health: dict[str, list[str]] = defaultdict(list)
        rss: dict[str, list[tuple[float, float]]] = defaultdict(list)
        db_trace: list[tuple[float, float]] = []   # (s, KiB) of the metadata databases
        # past the retention horizon: the first copies' points (made before t0) have expired
        # and the cloud's maintenance has had 5 minutes to remove them
        horizon_s = args.retention_hours * 3600 + 300
        while time.monotonic() - t0 < minutes * 60:
            for name, v in listed().items():
                rpo[name].append(v.rpo_seconds)
                health[name].append(v.replication_health)
            sample_daemons(pids, t0, rss)
            db_trace.append((time.monotonic() - t0, db_bytes(cloud) / 1024))
            time.sleep(SAMPLE_S)
        elapsed = time.monotonic() - t0
        wall1 = time.time()
        hist1 = {c.name: scrape(metrics_port(c)) for c in clouds}
        db1 = db_bytes(cloud)
        cpu = {n: round(cpu_seconds(p) - cpu0[n], 1) for n, p in pids.items()}
        work.stop_flag.set()
        work.join()
        stopped = time.time()
        # per VM: points in the window, and the gaps between them
        points: dict[str, list[float]] = defaultdict(list)
        names = {v.vm.vm_id: name for name, v in listed().items()}
        for vm_id, created in cloud.sql("SELECT vm_id, created_at FROM recovery_points ORDER BY created_at"):
            if wall0 - freq <= created <= wall1:
                points[names.get(vm_id, vm_id)].append(created)
        per_vm = {}
        for name in vms:
            ts = points[name]
            missed = sum(max(0, round((b - a) / freq) - 1) for a, b in zip(ts, ts[1:], strict=False)
                         if b - a > 1.5 * freq)
            hs = health[name]
            per_vm[name] = {"rpo_p50": percentile(rpo[name], 0.5), "rpo_p99": percentile(rpo[name], 0.99),
                            "rpo_max": max(rpo[name], default=0.0), "points": len(ts), "missed_cycles": missed,
                            "health_changes": sum(1 for a, b in zip(hs, hs[1:], strict=False) if a != b),
                            "not_normal_samples": sum(1 for x in hs if x != "Normal")}
        all_rpo = [x for v in rpo.values() for x in v]
        out["rpo_s"] = {"p50": percentile(all_rpo, 0.5), "p99": percentile(all_rpo, 0.99), "max": max(all_rpo),
                        "worst_vm_p99": max(v["rpo_p99"] for v in per_vm.values())}
        out["missed_cycles"] = {"total": sum(v["missed_cycles"] for v in per_vm.values()),
                                "vms_with_any": sum(1 for v in per_vm.values() if v["missed_cycles"])}
        out["health"] = {"changes": sum(v["health_changes"] for v in per_vm.values()),
                         "vms_ever_not_normal": sum(1 for v in per_vm.values() if v["not_normal_samples"])}
        out["points_per_vm"] = {"min": min(v["points"] for v in per_vm.values()),
                                "median": statistics.median(v["points"] for v in per_vm.values()),
                                "expected": round(elapsed / freq, 1)}
        out["cloud_rpc"] = {c.name: latency_p99(hist0[c.name], hist1[c.name]) for c in clouds}
        out["daemons"] = {n: {"cpu_s": cpu[n], "cpu_share": round(cpu[n] / elapsed, 3),
                              "peak_rss_mib": round(status_kib(p, "VmHWM") / 1024, 1),
                              **memory_figures(rss[n], horizon_s)}
                          for n, p in pids.items()}
        out["metadata_growth"] = {"bytes_window": db1 - db0,
                                  "per_day_mib": round((db1 - db0) / elapsed * 86400 / MiB, 1),
                                  "mib_per_minute": per_minute_mib(db_trace)}
        past = [(t, v) for t, v in db_trace if t >= horizon_s]
        if past and past[-1][0] - past[0][0] >= 600:
            out["metadata_growth"]["past_horizon_mib_per_min"] = round(slope_fit(past)[0], 3)
        out["workload"] = {"records_written": sum(work.seq.values()), "writer_worst_lag_s": round(work.lag_s, 2)}
        out["per_vm"] = per_vm
        # correctness: every VM's latest point (taken after its last record) equals its disk
        def latest_after(name: str) -> str:
            rows = cloud.sql("SELECT point_id FROM recovery_points WHERE vm_id = ? AND created_at > ? "
                             "ORDER BY created_at DESC LIMIT 1", (vm_ids[name], stopped))
            return str(rows[0][0]) if rows else ""

        vm_ids = {name: vid for vid, name in names.items()}
        wait_for(lambda: all(latest_after(n) for n in vms), 6 * freq, interval=2, what="a point after the last write")

        def check(name: str) -> bool:
            exported = root / f"export-{name}.raw"
            cloud.asr("point", "export", name, latest_after(name), "--disk", "0", "--out", str(exported),
                      "--vault", "contoso")
            disk = root / vms[name] / "disks" / f"{name}.vhdx"
            r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vhdx", str(exported), str(disk)],
                               capture_output=True, text=True)
            exported.unlink()
            return r.returncode == 0

        with ThreadPoolExecutor(2) as pool:
            equal = dict(zip(vms, pool.map(check, vms), strict=True))
        out["exports_equal"] = {"equal": sum(equal.values()), "of": len(equal),
                                "differ": sorted(n for n, ok in equal.items() if not ok)}
    finally:
        for hv in hvs.values():
            hv.close()
        procs.stop_all()
        if pg is not None:
            pg.destroy()
        shutil.rmtree(root, ignore_errors=True)
    out["load_average_after"] = os.getloadavg()
    per_vm_doc = out.pop("per_vm", {})
    print(json.dumps(out, indent=2))
    print(json.dumps({"per_vm": per_vm_doc}), file=sys.stderr)
    return 0 if out.get("exports_equal", {}).get("differ") == [] else 1


if __name__ == "__main__":
    sys.exit(main())
