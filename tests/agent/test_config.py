"""The agent's and the provider's TOML files: every wrong type, value or file is InvalidConfig
(ASR-0014, exit 14) naming the file, the key, the value and what is allowed; never a
traceback. Run through the real command lines. (cloudsvc.toml, nested keys and several wrong
keys at once: tests/foundation/test_config_files.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import BIN, run

AGENT_OK = 'state_dir = "state"\nvm_dir = "vms"\n'
PROVIDER_OK = 'state_dir = "state"\nlisten = "127.0.0.1:7500"\n'

# (name, file content or None for "no such file", words the message must hold)
AGENT_CASES: list[tuple[str, bytes | None, list[str]]] = [
    ("state_dir int", b'state_dir = 5\nvm_dir = "vms"\n', ["state_dir", "5", "an integer", "path"]),
    ("state_dir empty", b'state_dir = ""\nvm_dir = "vms"\n', ["state_dir", '""', "non-empty path"]),
    ("vm_dir missing", b'state_dir = "s"\n', ["vm_dir", "required"]),
    ("heartbeat string", (AGENT_OK + 'heartbeat_seconds = "often"\n').encode(),
     ["heartbeat_seconds", '"often"', "a string", "greater than 0"]),
    ("heartbeat zero", (AGENT_OK + "heartbeat_seconds = 0\n").encode(),
     ["heartbeat_seconds", "= 0 ", "greater than 0"]),
    ("heartbeat negative", (AGENT_OK + "heartbeat_seconds = -2.5\n").encode(), ["heartbeat_seconds", "-2.5"]),
    ("heartbeat nan", (AGENT_OK + "heartbeat_seconds = nan\n").encode(), ["heartbeat_seconds", "nan"]),
    ("heartbeat inf", (AGENT_OK + "heartbeat_seconds = inf\n").encode(), ["heartbeat_seconds", "inf"]),
    ("heartbeat bool", (AGENT_OK + "heartbeat_seconds = true\n").encode(), ["heartbeat_seconds", "true", "a boolean"]),
    ("proxy int", (AGENT_OK + "proxy = 3128\n").encode(), ["proxy", "3128", "URL"]),
    ("unknown key", (AGENT_OK + 'vmdir = "x"\n').encode(), ["unknown key vmdir", "vm_dir"]),
    ("not utf-8", b'state_dir = "\xff\xfe"\nvm_dir = "vms"\n', ["not UTF-8", "0xff"]),
    ("binary", bytes(range(256)) * 4, ["not UTF-8"]),
    ("not toml", b"state_dir = \n", ["not valid TOML"]),
    ("missing file", None, ["does not exist"]),
]

PROVIDER_CASES: list[tuple[str, bytes | None, list[str]]] = [
    ("listen int", b'state_dir = "s"\nlisten = 7500\n', ["listen", "7500", "an integer", "HOST:PORT"]),
    ("listen no port", b'state_dir = "s"\nlisten = "0.0.0.0"\n', ["listen", '"0.0.0.0"', "HOST:PORT"]),
    ("listen bad port", b'state_dir = "s"\nlisten = "h:70000"\n', ["listen", "70000"]),
    ("sync string", (PROVIDER_OK + '[[clouds]]\nname = "gold"\nhosts = ["hv01"]\nsync = "no"\n').encode(),
     ["clouds[0].sync", '"no"', "true or false"]),
    ("unknown cloud key", (PROVIDER_OK + '[[clouds]]\nname = "gold"\nhost = ["hv01"]\n').encode(),
     ["unknown key clouds[0].host", "hosts"]),
    ("hosts string", (PROVIDER_OK + '[[clouds]]\nname = "gold"\nhosts = "hv01"\n').encode(),
     ["clouds[0].hosts", '"hv01"', "array of host names"]),
    ("cloud without name", (PROVIDER_OK + '[[clouds]]\nhosts = ["hv01"]\n').encode(), ["clouds[0].name", "required"]),
    ("clouds not tables", (PROVIDER_OK + 'clouds = ["gold"]\n').encode(), ["clouds", "[[clouds]]"]),
    ("host twice", (PROVIDER_OK + '[[clouds]]\nname = "a"\nhosts = ["hv01"]\n[[clouds]]\nname = "b"\n'
                    'hosts = ["hv01"]\n').encode(), ["clouds[1].hosts", "hv01", "already in cloud 'a'"]),
    ("sync_seconds zero", (PROVIDER_OK + "sync_seconds = 0\n").encode(), ["sync_seconds", "greater than 0"]),
    ("heartbeat string", (PROVIDER_OK + 'heartbeat_seconds = "often"\n').encode(), ["heartbeat_seconds", '"often"']),
    ("state_dir int", b"state_dir = 5\n", ["state_dir", "5"]),
    ("not utf-8", b'state_dir = "\xc3\x28"\n', ["not UTF-8"]),
    ("missing file", None, ["does not exist"]),
]


def _write(tmp_path: Path, content: bytes | None) -> Path:
    path = tmp_path / "conf.toml"
    if content is not None:
        path.write_bytes(content)
    return path


def _check(argv: list[str], path: Path, words: list[str]) -> None:
    res = run(argv, timeout=60)
    assert res.returncode == 14, (res.returncode, res.stdout, res.stderr)
    assert "ASR-0014" in res.stderr and "Traceback" not in res.stderr + res.stdout, res.stderr
    assert str(path) in res.stderr, res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)
    # in our words: pydantic, which checks the files, is never quoted to the operator
    for w in ("Input should", "Field required", "Extra inputs", "pydantic", "[type="):
        assert w not in res.stderr, (w, res.stderr)


@pytest.mark.parametrize("name,content,words", AGENT_CASES, ids=[c[0] for c in AGENT_CASES])
def test_agent_config_is_checked(tmp_path: Path, name: str, content: bytes | None, words: list[str]) -> None:
    path = _write(tmp_path, content)
    _check([str(BIN / "asr-agent"), "run", "--config", str(path)], path, words)


@pytest.mark.parametrize("name,content,words", [c for c in AGENT_CASES if c[0] in (
    "state_dir int", "heartbeat nan", "unknown key", "not utf-8", "missing file")], ids=lambda c: str(c)[:20])
def test_agent_vm_commands_check_the_config(tmp_path: Path, name: str, content: bytes | None,
                                            words: list[str]) -> None:
    path = _write(tmp_path, content)
    _check([str(BIN / "asr-agent"), "vm", "list", "--config", str(path)], path, words)


@pytest.mark.parametrize("name,content,words", PROVIDER_CASES, ids=[c[0] for c in PROVIDER_CASES])
def test_provider_config_is_checked(tmp_path: Path, name: str, content: bytes | None, words: list[str]) -> None:
    path = _write(tmp_path, content)
    _check([str(BIN / "asr-provider"), "run", "--config", str(path)], path, words)


@pytest.mark.parametrize("tool", ["asr-agent", "asr-provider"])
def test_a_directory_is_not_a_config_file(tmp_path: Path, tool: str) -> None:
    _check([str(BIN / tool), "run", "--config", str(tmp_path)], tmp_path, ["is a directory"])


def test_valid_files_load(tmp_path: Path) -> None:
    from agent.config import load as load_agent
    from provider.config import load as load_provider

    a = tmp_path / "a.toml"
    a.write_text(AGENT_OK + 'proxy = ""\nheartbeat_seconds = 0.5\n')
    cfg = load_agent(str(a))
    assert (cfg.state_dir, cfg.proxy, cfg.heartbeat_seconds) == (str(tmp_path / "state"), None, 0.5)
    p = tmp_path / "p.toml"
    p.write_text(PROVIDER_OK + 'sync_seconds = 5\n[[clouds]]\nname = "gold"\nhosts = ["hv01"]\nsync = false\n'
                 '[[clouds]]\nname = "silver"\n')
    pc = load_provider(str(p))
    assert [(c.name, c.hosts, c.sync) for c in pc.clouds] == [("gold", ["hv01"], False), ("silver", [], True)]
    assert pc.sync_seconds == 5.0 and pc.cloud_of("hv01") is pc.clouds[0]
