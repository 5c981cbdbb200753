"""Issue 12, must-show 5 (first half): the daemons' Windows service classes against a fake
service control manager (``tests/foundation/fake_pywin32.py``, injected as the pywin32
modules): install stores the configuration path with the service and sets recovery actions;
the command line the service manager would run starts the service host; a real provider runs
as the service on the service manager's thread (no signal handlers), reports RUNNING once
ready, and a stop request ends in a graceful stop; a broken configuration is refused with
its code at install and reported as a failed service at start."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.foundation import fake_pywin32 as fw
from tests.harness import Cloud, Site, base_env, wait_for, write_toml

MODULES = ("asrops.winservice", "provider.winservice", "agent.winservice", "cloudsvc.winservice")


@pytest.fixture
def scm(monkeypatch: pytest.MonkeyPatch) -> Iterator[fw.FakeScm]:
    fake = fw.FakeScm()
    for name, module in fake.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    for name in MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield fake
    for name in MODULES:
        sys.modules.pop(name, None)  # bound to this fake: never reuse them


@pytest.fixture
def restore_process_state() -> Iterator[None]:
    """A daemon run in this process replaces the root logger's handlers: put them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for s, h in signals.items():
        signal.signal(s, h)


def split_windows(cmdline: str) -> list[str]:
    """CommandLineToArgvW's rules (what a Windows program's C runtime does to its command line)."""
    args: list[str] = []
    cur: list[str] = []
    in_quotes = False
    have = False
    i = 0
    while i < len(cmdline):
        c = cmdline[i]
        if c == "\\":
            n = 0
            while i < len(cmdline) and cmdline[i] == "\\":
                n += 1
                i += 1
            if i < len(cmdline) and cmdline[i] == '"':
                cur.append("\\" * (n // 2))
                if n % 2:
                    cur.append('"')
                    i += 1
                have = True
            else:
                cur.append("\\" * n)
                have = True
            continue
        if c == '"':
            in_quotes = not in_quotes
            have = True
        elif c in " \t" and not in_quotes:
            if have:
                args.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(c)
            have = True
        i += 1
    if have:
        args.append("".join(cur))
    return args


def agent_toml(tmp_path: Path) -> Path:
    return write_toml(tmp_path / "agent.toml", {"state_dir": str(tmp_path / "state"), "vm_dir": str(tmp_path / "vms")})


def test_install_stores_the_config_with_the_service_and_sets_recovery(scm: fw.FakeScm, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.winservice import AgentService
    from asrops.winservice import main

    cfg = agent_toml(tmp_path)
    monkeypatch.chdir(tmp_path)  # a relative --config is stored absolute
    assert main(AgentService, ["install", "--config", "agent.toml", "--startup", "delayed"]) == 0
    assert scm.parameters["AsrAgent"] == {"config": str(cfg), "log_file": ""}
    svc = scm.services["AsrAgent"]
    assert svc["startType"] == fw.SERVICE_AUTO_START and svc["delayedstart"] is True
    assert svc["displayName"] == "Site Recovery agent" and svc["userName"] is None
    actions = scm.recovery["AsrAgent"][fw.SERVICE_CONFIG_FAILURE_ACTIONS]
    assert actions["Actions"] == [(1, 5000), (1, 30000), (1, 60000)] and actions["ResetPeriod"] == 86400
    assert scm.recovery["AsrAgent"][fw.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG] is True  # exits with an error too
    # installing again updates the registration (a new configuration path)
    other = write_toml(tmp_path / "other.toml", {"state_dir": "s", "vm_dir": "v"})
    assert main(AgentService, ["install", "--config", str(other), "--log-file", str(tmp_path / "a.log")]) == 0
    assert scm.calls.count(("ChangeServiceConfig", "AsrAgent")) == 1
    assert scm.parameters["AsrAgent"] == {"config": str(other), "log_file": str(tmp_path / "a.log")}
    assert main(AgentService, ["start"]) == 0 and main(AgentService, ["stop"]) == 0
    assert main(AgentService, ["remove"]) == 0
    assert ("StartService", "AsrAgent") in scm.calls and ("StopServiceWithDeps", "AsrAgent") in scm.calls
    assert scm.services == {} and scm.parameters == {}


def test_install_refuses_a_configuration_the_daemon_would_refuse(scm: fw.FakeScm, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from asrops.winservice import main
    from provider.winservice import ProviderService

    bad = write_toml(tmp_path / "provider.toml", {"state_dir": str(tmp_path), "listen": 7500})
    assert main(ProviderService, ["install", "--config", str(bad)]) == 14
    err = capsys.readouterr().err
    assert "ASR-0014" in err and "listen" in err and "recommended action" in err
    assert main(ProviderService, ["install", "--config", str(tmp_path / "missing.toml")]) == 14
    assert scm.services == {} and scm.parameters == {}
    assert main(ProviderService, ["remove"]) == 40  # not installed: NotFound, not a traceback
    assert "ASR-0040" in capsys.readouterr().err


def test_the_stored_command_line_starts_the_service_host(scm: fw.FakeScm, tmp_path: Path) -> None:
    """Run what the service manager would run (its command line split as Windows splits it)
    with stand-in pywin32 modules that record how they were called."""
    from agent.winservice import AgentService
    from asrops.winservice import main

    assert main(AgentService, ["install", "--config", str(agent_toml(tmp_path))]) == 0
    svc = scm.services["AsrAgent"]
    argv = [svc["exeName"], *split_windows(svc["exeArgs"])]
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    marker = tmp_path / "dispatcher"
    (stubs / "win32service.py").write_text("error = OSError\n")
    (stubs / "win32serviceutil.py").write_text("class ServiceFramework:\n    pass\n")
    (stubs / "servicemanager.py").write_text(
        "import sys\nhosted = None\n"
        "def Initialize(*a): pass\n"
        "def PrepareToHostSingle(k=None):\n    global hosted\n    hosted = k\n"
        f"def StartServiceCtrlDispatcher():\n    open({str(marker)!r}, 'w').write("
        "hosted.__module__ + '.' + hosted.__name__ + ' ' + repr(sys.argv[1:]))\n")
    res = subprocess.run(argv, env=base_env(PYTHONPATH=str(stubs)), capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stderr
    # hosted from the module itself (run as __main__ by the service host), with no arguments
    assert marker.read_text() == "__main__.AgentService []"


def test_provider_runs_as_a_service_and_stops_gracefully(scm: fw.FakeScm, cloud: Cloud, tmp_path: Path,
                                                          restore_process_state: None) -> None:
    from asrops.winservice import main
    from provider.winservice import ProviderService

    cloud.asr("vault", "create", "contoso", "--region", "japaneast")
    root = tmp_path / "site"
    root.mkdir()
    site = Site(cloud, root, "contoso")
    site.new_key()
    assert site.register_provider("prov1").returncode == 0
    cfg = site.provider_config("prov1")
    log = tmp_path / "logs" / "provider.log"
    assert main(ProviderService, ["install", "--config", str(cfg), "--log-file", str(log)]) == 0
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    at_running: list[str] = []
    scm.on_status.append(lambda st: at_running.append(log.read_text()) if st.state == fw.SERVICE_RUNNING else None)

    dispatcher = threading.Thread(target=main, args=(ProviderService, []), name="dispatcher")
    dispatcher.start()
    try:
        wait_for(lambda: fw.SERVICE_RUNNING in scm.states("AsrProvider"), 60, what="SERVICE_RUNNING")
        # RUNNING only once the daemon was ready (pywin32's own SvcRun reports it before starting)
        assert len(at_running) == 1 and "provider running" in at_running[0]
        with socket.create_connection(("127.0.0.1", site.provider_port), timeout=5):
            pass
        wait_for(lambda: site.link_state("prov1") == "Connected", 30, what="the provider's heartbeats")
        assert scm.service_threads[0].name == "service_main"
        assert {s: signal.getsignal(s) for s in handlers} == handlers  # none installed from its thread
        scm.control(fw.SERVICE_CONTROL_STOP)
        # the stop handler returned only once the graceful stop was done
        text = log.read_text()
        assert "service control manager: stop" in text
        assert text.rstrip().splitlines()[-1] == _last_line_with("stopped", text)
    finally:
        if dispatcher.is_alive():
            scm.control(fw.SERVICE_CONTROL_STOP)
        dispatcher.join(60)
    states = scm.states("AsrProvider")
    running = states.index(fw.SERVICE_RUNNING)
    assert set(states[:running]) == {fw.SERVICE_START_PENDING}
    assert fw.SERVICE_STOP_PENDING in states[running:] and states[-1] == fw.SERVICE_STOPPED
    last = scm.statuses[-1]
    assert last.win32_exit == 0 and last.service_exit == 0
    with pytest.raises(OSError):  # the server drained and closed
        socket.create_connection(("127.0.0.1", site.provider_port), timeout=5).close()
    assert ("info", "AsrProvider running: provider prov1") in scm.events


def _last_line_with(word: str, text: str) -> str:
    lines = [line for line in text.splitlines() if word in line]
    return lines[-1] if lines else f"<no line with {word!r}>"


def test_a_service_whose_configuration_broke_stops_with_an_error(scm: fw.FakeScm, tmp_path: Path,
                                                                  restore_process_state: None) -> None:
    from agent.winservice import AgentService
    from asrops.winservice import main

    cfg = agent_toml(tmp_path)
    assert main(AgentService, ["install", "--config", str(cfg)]) == 0
    cfg.write_text('state_dir = "s"\nvm_dir = "v"\nheartbeat_seconds = "thirty"\n')
    main(AgentService, [])  # the dispatcher returns once the service has stopped
    last: Any = scm.statuses[-1]
    assert last.state == fw.SERVICE_STOPPED and last.win32_exit == fw.ERROR_SERVICE_SPECIFIC_ERROR
    assert fw.SERVICE_RUNNING not in scm.states("AsrAgent")
    errors = [msg for level, msg in scm.events if level == "error"]
    assert any("ASR-0014" in m and "heartbeat_seconds" in m for m in errors), errors
    assert "ASR-0014" in (tmp_path / "AsrAgent.log").read_text()  # the default log, beside the config
