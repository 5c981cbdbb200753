"""The environment variables Site Recovery's programs read: one table (:data:`VARIABLES`),
each with its kind, default, readers and whether it is a test hook. docs/operations.md
shows the same table, and tests/foundation/test_environment.py keeps the two, and the code's
reads, equal.

**Test hooks** (a fake clock, fault injection, an upload pause) change what a daemon does in
ways no operator wants: they are honoured only when ``ASR_TEST_MODE=1`` (tests/harness.py
sets it for every process a test starts). :func:`test_hook` returns "" for them otherwise,
and :func:`check`, which every daemon runs before anything else, refuses to start with one
set outside test mode (ASR-0014 naming the variable) rather than run on a fake clock or with
injected faults.

Tuning variables are read once, at import, through :func:`seconds`, :func:`integer` and
:func:`flag`; a value those cannot read gives the default there (an import must never be a
traceback), and :func:`check` refuses it at start, naming the variable and what it takes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from asrerrors import InvalidConfig

TEST_MODE = "ASR_TEST_MODE"

CLOUD, PROVIDER, AGENT, CLI = "asr-cloudsvc", "asr-provider", "asr-agent", "asr"
DAEMONS = (CLOUD, PROVIDER, AGENT)


@dataclass(frozen=True)
class Variable:
    name: str
    kind: str                  # seconds | bytes | flag | path | text | external
    default: str
    readers: tuple[str, ...]
    meaning: str
    test_only: bool = False
    minimum: float = 0.0       # seconds and bytes: the smallest value allowed (exclusive for seconds)


VARIABLES: dict[str, Variable] = {v.name: v for v in (
    Variable(TEST_MODE, "flag", "0", DAEMONS,
             "`1` honours the test hooks below; tests set it, production never should"),
    Variable("ASR_FAKE_CLOCK_FILE", "path", "", DAEMONS,
             "the time is read from this file (epoch seconds) instead of the system clock", test_only=True),
    Variable("ASR_FAULTS", "path", "", (CLOUD,),
             "a JSON list of storage faults to inject (cloudsvc/vaultstore/faultybackend.py)", test_only=True),
    Variable("ASR_TEST_UPLOAD_PAUSE", "text", "", (AGENT,),
             "`K:DIR`: a cycle pauses after K PutChunks messages until DIR/go exists", test_only=True),
    Variable("ASR_TEST_COMMAND_DIR", "path", "", (AGENT,),
             "commands in DIR/*.cmd are applied as if the provider sent them; results in DIR/*.result "
             "(agent/testcommands.py)", test_only=True),
    Variable("ASR_MAINTENANCE_SECONDS", "seconds", "60", (CLOUD,),
             "how often retention (and, at most hourly, garbage collection) runs"),
    Variable("ASR_LEASE_SECONDS", "seconds", "10", (CLOUD,),
             "the lease of a job or background task held by one of several cloud service processes: "
             "a dead process's work resumes in another within this long"),
    Variable("ASR_SITE_COMMAND_TIMEOUT", "seconds", "3600", (CLOUD,),
             "a site command a job waits for longer than this fails (ASR-0050)"),
    Variable("ASR_FAILOVER_SHUTDOWN_TIMEOUT", "seconds", "60", (CLOUD,),
             "how long an unplanned failover waits for the primary to shut down before going on"),
    Variable("ASR_FAILOVER_GRANT_TIMEOUT", "seconds", "60", (CLOUD,),
             "how long a cancel or failed failover waits for the primary to take the epoch back"),
    Variable("ASR_TEARDOWN_SITE_TIMEOUT", "seconds", "60", (CLOUD,),
             "how long `asr vault delete --force` waits for sites to stop replicating"),
    Variable("ASR_REPL_SEGMENT_BYTES", "bytes", str(64 * 1024 * 1024), (AGENT,),
             "chunk bytes per PutChunks call; the vault makes each call durable, so an interrupted "
             "upload loses at most this much", minimum=64 * 1024),
    Variable("ASR_RESYNC_FINGERPRINTS", "flag", "1", (AGENT,),
             "`0`: a resync compares keyed BLAKE3 ids instead of the xxh3 fingerprint files"),
    Variable("ASR_LOG_LEVEL", "text", "INFO", DAEMONS,
             "the log threshold: debug, info, warning, error or critical (asrops/logs.py)"),
    Variable("ASR_LOG_FORMAT", "text", "", DAEMONS,
             "`text` or `json`; unset: text on a terminal, json otherwise (asrops/logs.py)"),
    Variable("JOURNAL_STREAM", "external", "", DAEMONS,
             "systemd: set when stderr is the journal; lines then carry their syslog priority"),
    Variable("MALLOC_ARENA_MAX", "external", "2", DAEMONS, "glibc: set, it overrides the daemon's own tuning"),
    Variable("MALLOC_MMAP_THRESHOLD_", "external", str(32 << 20), DAEMONS,
             "glibc: set, it overrides the daemon's own tuning"),
    Variable("MALLOC_TRIM_THRESHOLD_", "external", str(256 << 20), DAEMONS,
             "glibc: set, it overrides the daemon's own tuning"),
    Variable("NOTIFY_SOCKET", "external", "", DAEMONS, "systemd: where READY/WATCHDOG/STOPPING go"),
    Variable("WATCHDOG_USEC", "external", "", DAEMONS, "systemd: the watchdog interval (pinged at half of it)"),
    Variable("WATCHDOG_PID", "external", "", DAEMONS, "systemd: the process the watchdog expects pings from"),
    Variable("ASR_ENDPOINT", "text", "", (CLI,), "the cloud's API address (or `--endpoint`)"),
    Variable("ASR_CREDENTIALS", "path", "", (CLI,), "the operator credential file (or `--credentials`)"),
    Variable("ASR_VAULT", "text", "", (CLI,), "the vault every command inside a vault uses (or `--vault`)"),
    Variable("ASR_PROGRESS", "flag", "", (CLI,),
             "`1` forces progress bars on, `0` off; unset: on when stderr is a terminal (asrcli/progress.py)"),
)}


def test_mode(environ: Mapping[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get(TEST_MODE, "") == "1"


def test_hook(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of test hook ``name``; "" unless test mode is on."""
    assert VARIABLES[name].test_only, name
    env = os.environ if environ is None else environ
    return env.get(name, "") if test_mode(env) else ""


def _seconds(name: str, raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > VARIABLES[name].minimum else None


def _integer(name: str, raw: str) -> int | None:
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= VARIABLES[name].minimum else None


def seconds(name: str) -> float:
    """A number of seconds from the environment, or the default (see :func:`check`)."""
    v = VARIABLES[name]
    got = _seconds(name, os.environ.get(name, v.default))
    return got if got is not None else float(v.default)


def integer(name: str) -> int:
    v = VARIABLES[name]
    got = _integer(name, os.environ.get(name, v.default))
    return got if got is not None else int(v.default)


def flag(name: str) -> bool:
    """``1`` (or the default) is on, ``0`` off."""
    v = VARIABLES[name]
    return os.environ.get(name, v.default) != "0"


def _problem(v: Variable, raw: str) -> str:
    """What is wrong with ``raw`` as a value of ``v``, or ""."""
    if v.kind == "seconds" and _seconds(v.name, raw) is None:
        return f"must be a number of seconds greater than {v.minimum:g} (e.g. {v.default})"
    if v.kind == "bytes" and _integer(v.name, raw) is None:
        return f"must be a whole number of bytes of at least {int(v.minimum)} (e.g. {v.default})"
    if v.kind == "flag" and raw not in ("0", "1"):
        return "must be 0 or 1"
    return ""


def check(component: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to start ``component`` with a test hook outside test mode or a value it cannot
    use: InvalidConfig (ASR-0014) naming the variable."""
    env = os.environ if environ is None else environ
    for v in VARIABLES.values():
        raw = env.get(v.name, "")
        if component not in v.readers or raw == "":
            continue
        if v.test_only and not test_mode(env):
            raise InvalidConfig(
                f"{v.name} is set, but it is a test hook ({v.meaning}) and {component} honours it only "
                f"with {TEST_MODE}=1",
                causes=("The environment of a test run was copied into the service's environment.",),
                action=f"Unset {v.name} in the service's environment (a test sets {TEST_MODE}=1 as well).")
        problem = _problem(v, raw)
        if problem:
            raise InvalidConfig(f"environment variable {v.name}={raw!r} is not allowed: it {problem}",
                                action=f"Correct or unset {v.name} in the service's environment "
                                       "(docs/operations.md lists every variable).")


__all__ = ["TEST_MODE", "VARIABLES", "Variable", "check", "flag", "integer", "seconds", "test_hook", "test_mode"]
