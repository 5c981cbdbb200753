"""Issue 2, must-show 3: provider and agent register and heartbeat through a real proxy;
with the proxy down they report the cloud unreachable, and recover when it returns."""

from __future__ import annotations

from pathlib import Path

from tests.harness import BIN, Cloud, Site, run, wait_for
from tests.proxies import TinyProxy


def test_register_and_heartbeat_through_tinyproxy(cloud: Cloud, tmp_path: Path) -> None:
    proxy = TinyProxy(cloud.procs, tmp_path, [cloud.port, cloud.reg_port]).start()
    cloud.asr("vault", "create", "v", "--region", "japaneast")
    site = Site(cloud, tmp_path, "v")
    site.new_key()
    assert site.register_provider(proxy=proxy.url).returncode == 0
    assert site.register_agent("hv01", proxy=proxy.url).returncode == 0
    reg = f"127.0.0.1:{cloud.reg_port}"
    assert proxy.connects().count(reg) == 2, proxy.connects()
    site.start_provider(proxy=proxy.url)
    site.start_agent("hv01", proxy=proxy.url)
    wait_for(lambda: site.link_state("prov1") == "Connected" and site.link_state("hv01") == "Connected", 30)
    assert proxy.connects().count(cloud.endpoint) >= 2, proxy.connects()
    # the password never reaches a log or status file
    assert proxy.password not in site.provider_proc.text()  # type: ignore[union-attr]
    assert proxy.password not in (tmp_path / "prov1" / "status.json").read_text()

    proxy.stop()
    wait_for(lambda: site.link_state("prov1") == "Unreachable" and site.link_state("hv01") == "Unreachable",
             60, what="daemons report the cloud unreachable")
    assert "ASR-0050" in str(site.status("hv01")["cloud"]["last_error"])
    log = site.agents["hv01"].text()
    assert "cloud unreachable" in log

    seen = len(proxy.connects())
    proxy.start()
    wait_for(lambda: site.link_state("prov1") == "Connected" and site.link_state("hv01") == "Connected",
             60, what="daemons recover when the proxy returns")
    assert len(proxy.connects()) > seen


def test_malformed_proxy_is_an_error(cloud: Cloud, tmp_path: Path) -> None:
    cloud.asr("vault", "create", "v", "--region", "japaneast")
    site = Site(cloud, tmp_path, "v")
    site.new_key()
    for bad in ("127.0.0.1:3128", "https://p:3128", "http://host", "http://u@host:1", "http://h:99999"):
        res = site.register_agent("hv01", proxy=bad)
        assert res.returncode == 13, (bad, res.stderr)
        assert "ASR-0013" in res.stderr and "proxy" in res.stderr
    assert not (tmp_path / "hv01").exists()
    # and in the configuration file: the daemon refuses to start
    assert site.register_agent("hv01").returncode == 0
    cfg = site.agent_config("hv01", proxy="proxy.example:3128")
    res = run([str(BIN / "asr-agent"), "run", "--config", str(cfg)], env=cloud.env(), timeout=30)
    assert res.returncode == 13 and "ASR-0013" in res.stderr
