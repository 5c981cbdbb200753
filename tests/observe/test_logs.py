"""Issue 12, logs: documented levels only (ASR-0014 for others, never a traceback), text on a
terminal and JSON otherwise or on request, journald priorities when stderr is the journal's
stream, the scheduler quiet at info, secrets redacted as a last line of defence."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from asrerrors import InvalidConfig
from asrops.logs import REDACTED, choose, setup
from tests.harness import BIN, Cloud, Procs, base_env, wait_for


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {n: logging.getLogger(n).level for n in ("apscheduler", "azure")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for n, lvl in quiet.items():
        logging.getLogger(n).setLevel(lvl)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_levels_and_formats_are_checked() -> None:
    assert choose({}, io.StringIO()) == (logging.INFO, "json")
    assert choose({}, Tty()) == (logging.INFO, "text")
    assert choose({"ASR_LOG_LEVEL": "DEBUG", "ASR_LOG_FORMAT": "Text"}, io.StringIO()) == (logging.DEBUG, "text")
    assert choose({"ASR_LOG_LEVEL": "warning", "ASR_LOG_FORMAT": "json"}, Tty()) == (logging.WARNING, "json")
    for env in ({"ASR_LOG_LEVEL": "verbose"}, {"ASR_LOG_LEVEL": "warn"}, {"ASR_LOG_FORMAT": "yaml"}):
        with pytest.raises(InvalidConfig) as info:
            choose(env, io.StringIO())
        assert info.value.code == "ASR-0014" and list(env.values())[0] in info.value.message


@pytest.mark.parametrize("argv", [["asr-agent", "run", "--config", "/nonexistent/agent.toml"],
                                  ["asr-provider", "run", "--config", "/nonexistent/provider.toml"],
                                  ["asr-cloudsvc", "serve", "--data-dir", "/nonexistent"]])
def test_an_unknown_level_is_a_coded_error_not_a_traceback(argv: list[str]) -> None:
    res = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=base_env(ASR_LOG_LEVEL="verbose"),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 14, res.stderr
    assert "ASR-0014" in res.stderr and "ASR_LOG_LEVEL=verbose" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_text_for_people_json_on_request() -> None:
    out = Tty()
    log = setup("asr-test", stream=out, environ={})
    log.info("point committed", extra={"fields": {"vm": "web01", "bytes_sent": 1024, "modes": ["incremental"],
                                                  "error": "two words"}})
    line = out.getvalue().strip()
    assert line.endswith('info    asr-test: point committed vm=web01 bytes_sent=1024 modes=["incremental"] '
                         'error="two words"'), line
    assert line[:4].isdigit() and line[23] == "Z"      # an RFC 3339 UTC timestamp first

    out = Tty()
    log = setup("asr-test", stream=out, environ={"ASR_LOG_FORMAT": "json"})
    log.warning("cloud unreachable", extra={"fields": {"target": "127.0.0.1:7443"}})
    doc = json.loads(out.getvalue())
    assert doc["level"] == "warning" and doc["msg"] == "cloud unreachable" and doc["target"] == "127.0.0.1:7443"


def _journal_file(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    f = tmp_path / "journal-stream"
    f.write_text("")
    st = os.stat(f)
    return f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_priorities_for_journald_when_stderr_is_the_journal(tmp_path: Path, fmt: str) -> None:
    path, env = _journal_file(tmp_path)
    with open(path, "w") as stream:
        log = setup("asr-test", stream=stream, environ={**env, "ASR_LOG_FORMAT": fmt, "ASR_LOG_LEVEL": "debug"})
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("x")
        log.critical("c")
    lines = path.read_text().splitlines()
    assert [ln[:3] for ln in lines[:4]] == ["<7>", "<6>", "<4>", "<3>"], lines
    assert lines[-1].startswith("<2>")
    # a traceback's lines keep the record's priority (journald reads each line on its own)
    assert all(ln.startswith(("<7>", "<6>", "<4>", "<3>", "<2>")) for ln in lines), lines
    assert sum(ln.startswith("<3>") for ln in lines) >= (2 if fmt == "json" else 4)
    if fmt == "text":
        assert lines[1] == "<6>info    asr-test: i"       # the journal stamps lines itself: no timestamp


def test_no_priority_prefix_when_stderr_is_not_the_journal(tmp_path: Path) -> None:
    path, env = _journal_file(tmp_path)
    other = tmp_path / "redirected"
    with open(other, "w") as stream:          # systemd's JOURNAL_STREAM, but stderr goes elsewhere
        setup("asr-test", stream=stream, environ={**env, "ASR_LOG_FORMAT": "text"}).warning("w")
    assert other.read_text().split(" ", 1)[1].startswith("warning asr-test: w")


def test_a_daemon_under_journald_writes_priorities(procs: Procs, tmp_path: Path) -> None:
    """A real cloud service whose stderr is the (pretended) journal stream."""
    cloud = Cloud(procs, tmp_path / "cloud")
    path, env = _journal_file(tmp_path)
    with open(path, "wb") as f:
        proc = subprocess.Popen([str(BIN / "asr-cloudsvc"), "serve", "--data-dir", str(cloud.data_dir)],
                                stdout=f, stderr=f, env=cloud.env(**env), start_new_session=True)
    try:
        wait_for(lambda: "serving" in path.read_text(), 30, what="cloudsvc serving")
        cloud.asr("vault", "show", "nope", check=False)    # a refused RPC: logged at info
        wait_for(lambda: "refused" in path.read_text(), 30, what="the refusal logged")
    finally:
        proc.terminate()
        proc.wait(30)
    lines = [ln for ln in path.read_text().splitlines() if ln]
    assert lines and all(ln[:3] in ("<6>", "<4>", "<3>", "<7>") for ln in lines), lines
    serving = next(ln for ln in lines if '"serving"' in ln)
    assert serving.startswith("<6>{") and json.loads(serving[3:])["msg"] == "serving"   # JSON: not a tty


def test_the_scheduler_is_quiet_at_info_and_heard_at_debug() -> None:
    """apscheduler's real "Running job ... executed successfully" lines (190 of 216 agent
    lines in one measure) are not logged at info."""
    for level, expect in (("info", False), ("debug", True)):
        out = io.StringIO()
        setup("asr-test", stream=out, environ={"ASR_LOG_LEVEL": level, "ASR_LOG_FORMAT": "text"})
        ran: list[float] = []
        sched = BackgroundScheduler()
        sched.add_job(ran.append, "interval", args=[1.0], seconds=0.05, id="tick")
        sched.start()
        try:
            wait_for(lambda: len(ran) >= 3, 30, what="the job to run three times")  # noqa: B023 - waited for here
        finally:
            sched.shutdown(wait=True)
        text = out.getvalue()
        assert ("Running job" in text and "executed successfully" in text) is expect, text[:2000]
        if not expect:
            assert text == "", text[:2000]
        logging.getLogger("apscheduler").warning("misfire")      # warnings still pass at info
        assert "misfire" in out.getvalue()


def test_private_keys_and_url_passwords_are_redacted() -> None:
    from certs.pki import key_to_pem, new_key

    pem = key_to_pem(new_key()).decode()
    body = pem.splitlines()[1]
    for fmt in ("text", "json"):
        out = io.StringIO()
        log = setup("asr-test", stream=out, environ={"ASR_LOG_FORMAT": fmt})
        log.info("oops %s", pem, extra={"fields": {"proxy": "http://alice:s3cret-pw@proxy:3128",
                                                   "key": pem}})
        text = out.getvalue()
        assert body not in text and "s3cret-pw" not in text and "PRIVATE KEY" not in text, text
        assert text.count(REDACTED) == 3 and "http://alice:" in text and "@proxy:3128" in text, text
