"""The environment variables the programs read (asrops/environment.py): every one the code
reads is in the one table and in docs/operations.md, marked when it is a test hook; test
hooks are honoured only with ASR_TEST_MODE=1 and a daemon refuses to start with one set
outside test mode; a tuning value a daemon cannot use is ASR-0014 naming it, never a
traceback."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from asrclock import FileClock, SystemClock, from_environment
from asrops.environment import VARIABLES
from tests.harness import BIN, REPO, base_env, run

NAME = re.compile(r"""["']((?:ASR|MALLOC|WATCHDOG|NOTIFY)_[A-Z_]+)["']""")


def production_files() -> list[Path]:
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include} - {"asrpb"}
    return [f for p in sorted(packages) for f in (REPO / p).rglob("*.py")]


def docs_rows() -> dict[str, str]:
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): line for line in section.splitlines()
            if (m := re.match(r"\|\s*`([A-Z_]+)`\s*\|", line))}


def test_every_variable_read_is_in_the_table_and_the_docs() -> None:
    read = {name for f in production_files() if f.name != "environment.py"
            for name in NAME.findall(f.read_text())}
    assert read, "the scan found no variable at all"
    assert read - set(VARIABLES) == set(), "read by the code but missing from asrops/environment.py"
    rows = docs_rows()
    assert set(rows) == set(VARIABLES), "docs/operations.md's table and asrops/environment.py differ"
    for name, v in VARIABLES.items():
        assert ("test only" in rows[name]) == v.test_only, rows[name]


def hook_env(**extra: str) -> dict[str, str]:
    env = base_env(**extra)
    env.pop("ASR_TEST_MODE")
    return env


DAEMONS = [
    ("asr-cloudsvc", ["serve", "--data-dir", "/nonexistent/asr"]),
    ("asr-provider", ["run", "--config", "/nonexistent/provider.toml"]),
    ("asr-agent", ["run", "--config", "/nonexistent/agent.toml"]),
]


@pytest.mark.parametrize("daemon, args", DAEMONS)
def test_daemons_refuse_a_fake_clock_outside_test_mode(tmp_path: Path, daemon: str, args: list[str]) -> None:
    clock = tmp_path / "clock"
    clock.write_text("1780000000")
    res = run([str(BIN / daemon), *args], env=hook_env(ASR_FAKE_CLOCK_FILE=str(clock)), timeout=60)
    assert res.returncode == 14, res.stderr
    assert "ASR-0014" in res.stderr and "ASR_FAKE_CLOCK_FILE" in res.stderr and "ASR_TEST_MODE=1" in res.stderr
    assert "Traceback" not in res.stderr
    # in test mode the hook is accepted: the daemon gets as far as its (missing) configuration
    tested = run([str(BIN / daemon), *args], env=base_env(ASR_FAKE_CLOCK_FILE=str(clock)), timeout=60)
    assert "ASR_FAKE_CLOCK_FILE" not in tested.stderr and "/nonexistent/" in tested.stderr, tested.stderr


@pytest.mark.parametrize("daemon, args, var", [
    ("asr-cloudsvc", DAEMONS[0][1], "ASR_FAULTS"),
    ("asr-agent", DAEMONS[2][1], "ASR_TEST_UPLOAD_PAUSE"),
])
def test_daemons_refuse_other_test_hooks_outside_test_mode(tmp_path: Path, daemon: str, args: list[str],
                                                           var: str) -> None:
    res = run([str(BIN / daemon), *args], env=hook_env(**{var: str(tmp_path / "x")}), timeout=60)
    assert res.returncode == 14 and var in res.stderr, res.stderr


@pytest.mark.parametrize("daemon, args, var, value, words", [
    ("asr-cloudsvc", DAEMONS[0][1], "ASR_MAINTENANCE_SECONDS", "often", ["number of seconds"]),
    ("asr-cloudsvc", DAEMONS[0][1], "ASR_SITE_COMMAND_TIMEOUT", "-5", ["greater than 0"]),
    ("asr-cloudsvc", DAEMONS[0][1], "ASR_FAILOVER_SHUTDOWN_TIMEOUT", "nan", ["number of seconds"]),
    ("asr-agent", DAEMONS[2][1], "ASR_REPL_SEGMENT_BYTES", "12", ["at least 65536"]),
    ("asr-agent", DAEMONS[2][1], "ASR_RESYNC_FINGERPRINTS", "no", ["0 or 1"]),
    ("asr-provider", DAEMONS[1][1], "ASR_TEST_MODE", "yes", ["0 or 1"]),
])
def test_bad_values_are_refused_by_name(daemon: str, args: list[str], var: str, value: str,
                                        words: list[str]) -> None:
    res = run([str(BIN / daemon), *args], env=base_env(**{var: value}), timeout=60)
    assert res.returncode == 14, res.stderr
    assert f"{var}={value!r}" in res.stderr and "Traceback" not in res.stderr
    for w in words:
        assert w in res.stderr, res.stderr


def test_the_fake_clock_needs_test_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = tmp_path / "clock"
    clock.write_text("1780000000")
    monkeypatch.setenv("ASR_FAKE_CLOCK_FILE", str(clock))
    monkeypatch.delenv("ASR_TEST_MODE", raising=False)
    assert isinstance(from_environment(), SystemClock)
    monkeypatch.setenv("ASR_TEST_MODE", "1")
    c = from_environment()
    assert isinstance(c, FileClock) and c.now() == 1780000000.0
