"""The whole forward path as an operator runs it, through a real proxy: protect a cloud and
a VM with `asr`, and the agent daemon replicates on its schedule by itself; the exported
point equals the VM's disks (qemu-img compare)."""

from __future__ import annotations

import json
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.controlplane.sitefix import agent_vm, create_vm, start_site, wait_vms
from tests.harness import Cloud, wait_for
from tests.proxies import TinyProxy


def test_protect_and_replicate_on_schedule_through_proxy(cloud: Cloud, tmp_path: Path) -> None:
    proxy = TinyProxy(cloud.procs, tmp_path, [cloud.port, cloud.reg_port]).start()
    site = start_site(cloud, tmp_path, clouds=[{"name": "gold", "hosts": ["hv01"], "sync": True}], proxy=proxy.url)
    vm = create_vm(site, "hv01", "web01")
    assert agent_vm(site, "hv01", "start", "web01").returncode == 0
    assert agent_vm(site, "hv01", "write", "web01", "--disk", "0", "--offset", "1048576", "--length", "200000",
                    "--pattern", "171").returncode == 0
    wait_vms(cloud, {"web01"})
    cloud.asr("cloud", "protect", "gold", "--vault", "contoso", "--storage", "store1", "--copy-frequency", "30s",
              "--retention-hours", "1", "--wait")
    cloud.asr("vm", "protect", "web01", "--vault", "contoso", "--wait")

    def points() -> list[dict[str, Any]]:
        return list(cloud.asr_json("point", "list", "web01", "--vault", "contoso"))

    first = wait_for(points, 90, interval=0.5, what="the first scheduled point")
    shown = cloud.asr_json("vm", "show", "web01", "--vault", "contoso")
    assert shown["protection_state"] == "Protected"
    assert shown["last_replication"] is not None and float(shown["initial_replication_progress"]) == 1.0
    assert shown["replication_health"] == "Normal"
    # a change on the host reaches the vault at the next interval, with no command from anyone
    assert agent_vm(site, "hv01", "write", "web01", "--disk", "1", "--offset", "65536", "--length", "4096",
                    "--pattern", "90").returncode == 0
    later = wait_for(lambda: (lambda p: p if len(p) > len(first) else None)(points()), 90, interval=0.5,
                     what="a second point on schedule")
    latest = later[-1]["point_id"]
    for i, disk in enumerate(vm["disks"]):
        out = tmp_path / f"export{i}.raw"
        cloud.asr("point", "export", "web01", latest, "--vault", "contoso", "--disk", str(i), "--out", str(out))
        fmt = {"vhdx": "vhdx", "vhd": "vpc"}[disk["format"]]
        res = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt, str(out), disk["path"]],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    # every byte went through the proxy: the agent has no other way to the cloud
    assert proxy.connects().count(cloud.endpoint) >= 2
    # the protected VM shows on this month's bill, with what it replicated
    month = time.strftime("%Y-%m", time.gmtime())
    bill = cloud.asr_json("billing", "report", "--vault", "contoso", "--month", month)
    line = next(v for v in bill["vms"] if v["name"] == "web01")
    assert float(line["protected_days"]) > 0 and int(line["replicated_bytes"]) > 0
    # a test protects for minutes: the average is the VM-days over the month, to 4 decimals
    expected = (Decimal(str(line["protected_days"])) / int(bill["days_in_month"])).quantize(Decimal("0.0001"))
    assert Decimal(str(bill["average_protected_vms"])) == expected and bill["currency"] == "USD"
    status = json.loads((tmp_path / "hv01" / "status.json").read_text())
    assert status["cloud"]["proxy"].startswith("http://asr:***@")
