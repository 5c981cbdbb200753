"""Issue 12: the configuration files checked by their pydantic models (asrops/configfile.py).

The cloud service's ``cloudsvc.toml`` (before: no type checks at all), nested keys of the agent
and provider files, several wrong keys reported as one error, errors in our words rather than
pydantic's, a proxy's password never shown, ``init`` writing a file that reads back equal, and
the one table of keys and defaults in docs/operations.md equal to the models. Run through the
real command lines where a daemon reads the file."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, ValidationError

from asrops import configdoc, configfile
from asrops.configfile import Table
from cloudsvc.config import CloudConfig
from cloudsvc.config import load as load_cloud
from tests.harness import BIN, REPO, free_port, run

# pydantic's own wording, which an operator must never have to read
PYDANTIC_WORDS = ("Input should", "Field required", "Extra inputs", "pydantic", "validation error", "[type=")


def check(argv: list[str], path: Path, words: list[str], exit_code: int = 14, count: int | None = None) -> str:
    """The command failed with one error naming ``path`` and holding every word."""
    res = run(argv, timeout=60)
    err = res.stderr
    assert res.returncode == exit_code, (res.returncode, res.stdout, err)
    assert f"ASR-00{exit_code}" in err and "Traceback" not in err + res.stdout, err
    assert err.count("error ASR-") == 1, err
    assert str(path) in err, err
    for w in words:
        assert w in err, (w, err)
    for w in PYDANTIC_WORDS:
        assert w not in err, (w, err)
    if count is not None:   # one detail line per wrong key
        assert len(re.findall(r"^  - ", err, re.M)) == count, err
    return err


# ---------------------------------------------------------------------------------------------
# cloudsvc.toml, through asr-cloudsvc serve --data-dir

@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("cloud") / "data"
    res = run([str(BIN / "asr-cloudsvc"), "init", "--data-dir", str(data), "--listen", f"127.0.0.1:{free_port()}",
               "--name", "dr.contoso.example"], timeout=60)
    assert res.returncode == 0, res.stderr
    return data


def with_keys(text: str, **lines: str) -> str:
    """The file with each named key's line replaced by (or, when new, followed by) ``lines``."""
    kept = [ln for ln in text.splitlines() if ln.split(" = ")[0] not in lines]
    return "\n".join(kept + list(lines.values())) + "\n"


# (name, keys to set (key=line), words the message must hold)
CLOUD_CASES: list[tuple[str, dict[str, str], list[str]]] = [
    ("workers string", {"workers": 'workers = "many"'}, ['workers = "many"', "a string", "an integer from 1 to 1024"]),
    ("workers zero", {"workers": "workers = 0"}, ["workers = 0 ", "an integer from 1 to 1024"]),
    ("workers float", {"workers": "workers = 2.5"}, ["workers = 2.5", "a float", "an integer"]),
    ("workers huge", {"workers": "workers = 64000"}, ["workers = 64000", "from 1 to 1024"]),
    ("listen int", {"listen": "listen = 7443"}, ["listen = 7443", "an integer", "HOST:PORT"]),
    ("listen no port", {"listen": 'listen = "0.0.0.0"'}, ['listen = "0.0.0.0"', "HOST:PORT"]),
    ("listen empty", {"listen": 'listen = ""'}, ['listen = ""', "HOST:PORT"]),
    ("registration port 0", {"registration_listen": 'registration_listen = "127.0.0.1:0"'},
     ['registration_listen = "127.0.0.1:0"', "from 1 to 65535"]),
    ("registration no host", {"registration_listen": 'registration_listen = ":7444"'},
     ['registration_listen = ":7444"', "HOST:PORT"]),
    ("metrics bad port", {"metrics_listen": 'metrics_listen = "127.0.0.1:99999"'},
     ["metrics_listen", "99999", "from 1 to 65535"]),
    ("metrics int", {"metrics_listen": "metrics_listen = 9464"}, ["metrics_listen = 9464", "an integer"]),
    ("names string", {"names": 'names = "dr.example"'}, ['names = "dr.example"', "a string", "an array of DNS names"]),
    ("names item int", {"names": 'names = ["dr.example", 5]'}, ["names[1] = 5", "an integer", "an array of DNS names"]),
    ("names item empty", {"names": 'names = ["dr.example", ""]'}, ['names[1] = ""', "non-empty strings"]),
    ("heartbeat string", {"heartbeat_timeout_seconds": 'heartbeat_timeout_seconds = "thirty"'},
     ['heartbeat_timeout_seconds = "thirty"', "a string", "greater than 0"]),
    ("heartbeat negative", {"heartbeat_timeout_seconds": "heartbeat_timeout_seconds = -1"},
     ["heartbeat_timeout_seconds = -1", "greater than 0"]),
    ("heartbeat bool", {"heartbeat_timeout_seconds": "heartbeat_timeout_seconds = true"},
     ["heartbeat_timeout_seconds = true", "a boolean"]),
    ("unknown key", {"worker": "worker = 8"}, ["unknown key worker", "registration_listen", "workers"]),
    # data_dir was a field of the old dataclass: it was accepted from the file and overrode --data-dir
    ("data_dir key", {"data_dir": 'data_dir = "/elsewhere"'}, ["unknown key data_dir"]),
    ("unknown table", {"tls": '[tls]\ncert = "server.pem"'}, ["unknown key tls", "workers"]),
    ("a date", {"listen": "listen = 2026-06-01"}, ["listen = 2026-06-01", "a TOML date, not a string"]),
]


@pytest.mark.parametrize("name,keys,words", CLOUD_CASES, ids=[c[0] for c in CLOUD_CASES])
def test_cloudsvc_toml_is_checked(initialised: Path, tmp_path: Path, name: str, keys: dict[str, str],
                                  words: list[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(initialised, data)
    path = data / "cloudsvc.toml"
    path.write_text(with_keys(path.read_text(), **keys))
    check([str(BIN / "asr-cloudsvc"), "serve", "--data-dir", str(data)], path, words, count=1)


def test_cloudsvc_toml_every_wrong_key_in_one_error(initialised: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(initialised, data)
    path = data / "cloudsvc.toml"
    path.write_text(with_keys(path.read_text(), workers='workers = "many"', listen="listen = 7443",
                              names='names = ["a", 5]', extra="threads = 4"))
    err = check([str(BIN / "asr-cloudsvc"), "serve", "--data-dir", str(data)], path,
                ["has 4 wrong settings", 'workers = "many"', "listen = 7443", "names[1] = 5", "unknown key threads"],
                count=4)
    # in the order of the keys table (the model's), not the file's
    assert err.index("listen = 7443") < err.index("names[1]") < err.index("workers")


@pytest.mark.parametrize("content,words", [
    (b"listen = \n", ["not valid TOML"]),
    (b'listen = "\xff"\n', ["not UTF-8", "0xff"]),
    (None, ["is a directory"]),
])
def test_cloudsvc_toml_unreadable(initialised: Path, tmp_path: Path, content: bytes | None, words: list[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(initialised, data)
    path = data / "cloudsvc.toml"
    path.unlink()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    check([str(BIN / "asr-cloudsvc"), "serve", "--data-dir", str(data)], path, words)


def test_cloudsvc_without_its_file_is_not_initialised(tmp_path: Path) -> None:
    res = run([str(BIN / "asr-cloudsvc"), "serve", "--data-dir", str(tmp_path)], timeout=60)
    assert res.returncode == 14 and "not an initialised" in res.stderr and "asr-cloudsvc init" in res.stderr
    assert "Traceback" not in res.stderr


def test_init_writes_a_file_that_reads_back_equal(initialised: Path) -> None:
    cfg = load_cloud(str(initialised))
    assert cfg.data_dir == str(initialised) and cfg.path == str(initialised / "cloudsvc.toml")
    assert "dr.contoso.example" in cfg.names and cfg.registration_listen.endswith(
        f":{int(cfg.listen.rsplit(':', 1)[1]) + 1}")
    # every key spelt out, the defaults of the model among them
    written = tomllib.loads((initialised / "cloudsvc.toml").read_text())
    assert set(written) == set(CloudConfig.model_fields)
    assert (written["workers"], written["heartbeat_timeout_seconds"], written["metrics_listen"]) == (64, 60.0, "")
    assert cfg.to_toml() == (initialised / "cloudsvc.toml").read_text()


def test_init_with_an_empty_name_is_a_usage_error(tmp_path: Path) -> None:
    res = run([str(BIN / "asr-cloudsvc"), "init", "--data-dir", str(tmp_path / "d"), "--name", ""], timeout=60)
    assert res.returncode == 2 and "ASR-0002" in res.stderr and "names[" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "d" / "cloudsvc.toml").exists()


# TOML strings are UTF-8 text without surrogates
TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(names=st.lists(TEXT, max_size=4), port=st.integers(1, 65535), host=TEXT,
       heartbeat=st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False),
       workers=st.integers(1, 1024), metrics=st.booleans())
def test_to_toml_reads_back_equal(names: list[str], port: int, host: str, heartbeat: float, workers: int,
                                  metrics: bool) -> None:
    cfg = CloudConfig.new("/srv/asr", names=names, listen=f"{host}:{port}", heartbeat_timeout_seconds=heartbeat,
                          workers=workers, metrics_listen=f"[::1]:{port}" if metrics else "")
    again = CloudConfig.new("/srv/asr", **tomllib.loads(cfg.to_toml()))
    assert again == cfg


# ---------------------------------------------------------------------------------------------
# nested keys and several wrong keys, through asr-agent and asr-provider

AGENT = 'state_dir = "state"\nvm_dir = "vms"\n'
PROVIDER = 'state_dir = "state"\n'

NESTED_CASES: list[tuple[str, str, str, list[str], int]] = [
    ("agent", "several, nested too",
     AGENT + 'heartbeat_seconds = "x"\n[throttle]\nwork_hours_mb_s = "5"\nwork_start = "8:00"\nburst = 3\n',
     ["has 4 wrong settings", 'heartbeat_seconds = "x"', 'throttle.work_hours_mb_s = "5"',
      'throttle.work_start = "8:00"', "unknown key throttle.burst; the keys allowed in throttle are"], 4),
    ("agent", "a table inside throttle", AGENT + "[throttle]\nwork_hours_mb_s = 5\n[throttle.limits]\nday = 1\n",
     ["unknown key throttle.limits", "work_hours_mb_s"], 1),
    ("agent", "throttle an array", AGENT + "throttle = [5]\n", ["throttle = [5]", "it is an array", "[throttle]"], 1),
    ("agent", "work_days item", AGENT + '[throttle]\nwork_hours_mb_s = 5\nwork_days = ["mon", 2]\n',
     ["throttle.work_days[1] = 2", "an integer", "each day once"], 1),
    ("agent", "work_start after default end", AGENT + '[throttle]\nwork_hours_mb_s = 5\nwork_start = "19:00"\n',
     ['throttle.work_end = "18:00"', "after work_start (19:00)"], 1),
    ("provider", "hosts item", PROVIDER + '[[clouds]]\nname = "gold"\nhosts = ["hv01", 5]\n',
     ["clouds[0].hosts[1] = 5", "an integer", "array of host names"], 1),
    ("provider", "hosts item empty", PROVIDER + '[[clouds]]\nname = "gold"\nhosts = ["hv01", ""]\n',
     ['clouds[0].hosts[1] = ""', "non-empty strings"], 1),
    ("provider", "cloud named twice", PROVIDER + '[[clouds]]\nname = "gold"\n[[clouds]]\nname = "gold"\n',
     ['clouds[1].name = "gold"', "names cloud 'gold' again (clouds[0])"], 1),
    ("provider", "host twice in a cloud", PROVIDER + '[[clouds]]\nname = "gold"\nhosts = ["hv01", "hv01"]\n',
     ["clouds[0].hosts", "names host 'hv01' twice"], 1),
    ("provider", "network twice in a cloud", PROVIDER + '[[clouds]]\nname = "gold"\nnetworks = ["corp", "corp"]\n',
     ["clouds[0].networks", "names network 'corp' twice"], 1),
    ("provider", "network not a string", PROVIDER + '[[clouds]]\nname = "gold"\nnetworks = ["corp", 1]\n',
     ["clouds[0].networks[1] = 1", "VM network names"], 1),
    ("agent", "replica_listen without a port", AGENT + 'replica_listen = "10.0.0.11"\n',
     ['replica_listen = "10.0.0.11"', "HOST:PORT"], 1),
    ("provider", "clouds a single table", PROVIDER + '[clouds]\nname = "gold"\n',
     ["clouds = a table", "it is a table", "[[clouds]]"], 1),
    ("provider", "a table inside a cloud", PROVIDER + '[[clouds]]\nname = "gold"\n[clouds.options]\nx = 1\n',
     ["unknown key clouds[0].options", "hosts, name, networks, sync"], 1),
    ("provider", "several clouds wrong", PROVIDER + 'sync_seconds = -1\n[[clouds]]\nname = 5\n[[clouds]]\n'
     'name = "silver"\nsync = 1\n[[clouds]]\nhosts = []\n',
     ["has 4 wrong settings", "sync_seconds = -1", "clouds[0].name = 5", "clouds[1].sync = 1", "it is an integer",
      "clouds[2].name is required"], 4),
]


@pytest.mark.parametrize("tool,name,content,words,count", NESTED_CASES, ids=[c[1] for c in NESTED_CASES])
def test_nested_keys_are_checked(tmp_path: Path, tool: str, name: str, content: str, words: list[str],
                                 count: int) -> None:
    path = tmp_path / f"{tool}.toml"
    path.write_text(content)
    check([str(BIN / f"asr-{tool}"), "run", "--config", str(path)], path, words, count=count)


def test_a_proxy_password_is_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    # alone, a malformed proxy URL keeps ASR-0013, as --proxy does
    path.write_text(AGENT + 'proxy = "https://alice:s3cret-pw@proxy.example:3128"\n')
    err = check([str(BIN / "asr-agent"), "run", "--config", str(path)], path,
                ['proxy = "...proxy.example:3128"', "must start with http://"], exit_code=13, count=1)
    assert "s3cret-pw" not in err and "alice" not in err
    # with another wrong key, one ASR-0014 lists both
    path.write_text(AGENT + 'heartbeat_seconds = 0\nproxy = "http://alice:s3cret-pw@proxy.example"\n')
    err = check([str(BIN / "asr-agent"), "run", "--config", str(path)], path,
                ["heartbeat_seconds = 0", 'proxy = "...proxy.example"', "must name a host and a port"], count=2)
    assert "s3cret-pw" not in err


# ---------------------------------------------------------------------------------------------
# pydantic's error types in our words

class Sample(Table):
    """Keys without a Kind of their own: the words come from the error type."""

    text: str = ""
    count: int = 0
    ratio: float = Field(1.0, gt=0, le=10, allow_inf_nan=False)
    floor: float = Field(1.0, ge=0.5)
    flag: bool = False
    items: list[str] = Field(default_factory=list, min_length=1)
    needed: str


@pytest.mark.parametrize("raw,expected", [
    ({"text": 1}, "text = 1 is not allowed: it is an integer; text must be a string"),
    ({"count": "1"}, 'count = "1" is not allowed: it is a string; count must be an integer'),
    ({"count": 1.5}, "count = 1.5 is not allowed: it is a float; count must be an integer"),
    ({"ratio": "1"}, 'ratio = "1" is not allowed: it is a string; ratio must be a number'),
    ({"ratio": 0}, "ratio = 0 is not allowed: ratio must be greater than 0"),
    ({"ratio": 11}, "ratio = 11 is not allowed: ratio must be at most 10"),
    ({"ratio": math.inf}, "ratio = inf is not allowed: ratio must be a finite number"),
    ({"floor": 0.25}, "floor = 0.25 is not allowed: floor must be at least 0.5"),
    ({"flag": "yes"}, 'flag = "yes" is not allowed: it is a string; flag must be true or false (without quotes)'),
    ({"flag": 1}, "flag = 1 is not allowed: it is an integer; flag must be true or false (without quotes)"),
    ({"items": "a"}, 'items = "a" is not allowed: it is a string; items must be an array'),
    ({"items": []}, "items = [] is not allowed: items must be an array of at least 1 items"),
    ({"items": ["a", {}]}, "items[1] = a table is not allowed: it is a table; items must be a string"),
    ({"other": 1}, "unknown key other; the keys allowed are count, flag, floor, items, needed, ratio, text"),
    ({}, "needed is required: it must be a string"),
])
def test_error_types_in_plain_words(raw: dict[str, object], expected: str) -> None:
    full = {"needed": "x", "items": ["a"], **raw}
    if raw == {}:
        full.pop("needed")
    with pytest.raises(ValidationError) as info:
        Sample.model_validate(full)
    assert [configfile.describe_error(Sample, e) for e in info.value.errors()] == [expected]


# ---------------------------------------------------------------------------------------------
# the one table of keys and defaults

def test_the_documented_table_is_the_models() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    assert configdoc.documented(doc) == configdoc.table(), "run: python -m asrops.configdoc --write"
    # and it names every key of every file, nested ones too, with its default
    for row in ("| `agent.toml` | `throttle.work_start` | \"HH:MM\" | \"08:00\" |",
                "| `provider.toml` | `clouds[].sync` | boolean | true |",
                "| `provider.toml` | `sync_seconds` | seconds > 0 | 300 |",
                "| `cloudsvc.toml` | `workers` | integer 1-1024 | 64 |"):
        assert row in doc, row


def test_configdoc_prints_the_table() -> None:
    res = subprocess.run([str(BIN / "python"), "-m", "asrops.configdoc"], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert res.returncode == 0 and res.stdout == configdoc.table(), res.stderr
