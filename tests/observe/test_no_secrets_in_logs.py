"""Issue 12, must-show 7: no log line ever holds a key, a registration secret or a private key.

The whole story runs at debug level (every process logs all it can): registration of a
provider with customer-managed encryption and of an agent with the vault's key file, a
refused registration with a superseded key file, protection, replication, test failover,
planned failover and commit, failback and commit, forward replication again, and an export,
each with the customer key where an encrypted VM needs it. Then every line every daemon
wrote and everything every command printed is searched for every secret the story made:
registration secrets (``certs.keyfile``: ``secret``), the customer key (``chunkfmt``'s key
file, in every encoding), and every PEM private key (the service CA, the server, the
operator credential, the vault CA in the metadata DB, each site server's key).
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_encoding

import tests.controlplane.sitefix as sitefix
import tests.harness as harness
import tests.replication.fixture as replfix
from tests.failover.fixture import VAULT, asr_job
from tests.harness import Cloud, Procs

PEM_MARK = "PRIVATE KEY"


def _pem_bodies(text: str) -> list[str]:
    """The base64 lines of every PEM private key in ``text`` (JSON-escaped newlines too)."""
    text = text.replace("\\n", "\n")
    out, inside = [], False
    for line in text.splitlines():
        line = line.strip().strip('",')
        if "-----BEGIN" in line and PEM_MARK in line:
            inside = True
        elif "-----END" in line:
            inside = False
        elif inside and len(line) >= 16:
            out.append(line)
    return out


def _encodings(raw: bytes) -> list[str]:
    """Ways a key's bytes could be printed: hex, base64, Python's repr, protobuf's text format."""
    return [raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode().rstrip("="), repr(raw)[2:-1], text_encoding.CEscape(raw, False)]


def secrets_of(root: Path, cloud: Cloud) -> dict[str, str]:
    """Every secret the story left in files under ``root`` and in the metadata DB: {text: what}."""
    found: dict[str, str] = {}
    for f in root.rglob("*"):
        if not f.is_file() or f.suffix in (".log", ".vhd", ".vhdx", ".raw") or f.stat().st_size > 1 << 20:
            continue
        text = f.read_bytes().decode("utf-8", "replace")
        for body in _pem_bodies(text):
            found[body] = f"private key line of {f}"
        if f.suffix == ".key" or f.name == "customer.key":
            try:
                doc: Any = json.loads(text)
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("secret"), str):
                found[doc["secret"]] = f"registration secret of {f}"
            if isinstance(doc, dict) and isinstance(doc.get("key"), str):
                found[doc["key"]] = f"customer key of {f}"
                for enc in _encodings(base64.b64decode(doc["key"])):
                    found[enc] = f"customer key of {f} (encoded)"
    for (pem,) in cloud.sql("SELECT ca_key_pem FROM vaults"):
        for body in _pem_bodies(pem):
            found[body] = "a vault CA's private key"
    return found


def leaks(lines: list[tuple[str, str]], secrets: dict[str, str]) -> list[str]:
    """Each (where, line) that holds a secret or a PEM private key marker, said as a finding."""
    out = []
    for where, line in lines:
        if PEM_MARK in line:
            out.append(f"{where}: a PEM private key: {line[:200]}")
        # a JSON log line doubles backslashes: search the line as written and unescaped once
        text = line + "\n" + line.replace("\\\\", "\\")
        for s, what in secrets.items():
            if s in text:
                out.append(f"{where}: {what}: {line[:200]}")
    return out


def test_the_search_finds_a_planted_secret() -> None:
    """The search below can fail: it finds each kind of secret where one is."""
    from certs.pki import key_to_pem, new_key

    pem = key_to_pem(new_key()).decode()
    secrets = {b: "pem" for b in _pem_bodies(json.dumps({"key_pem": pem}))}
    assert len(secrets) >= 3
    raw = bytes(range(32))
    secrets.update({e: "customer key" for e in _encodings(raw)})
    secrets["Zm9vYmFyYmF6cXV1eA"] = "registration secret"
    lines = [("a", "nothing here"), ("b", f"key {raw.hex()}"), ("c", "secret=Zm9vYmFyYmF6cXV1eA"),
             ("d", pem.splitlines()[2]), ("e", "-----BEGIN EC PRIVATE KEY-----"),
             ("f", json.dumps({"msg": f"queued {text_encoding.CEscape(raw, False)}"}))]
    found = leaks(lines, secrets)
    assert [f.split(":")[0] for f in found] == ["b", "c", "d", "e", "f"], found


def test_no_log_line_holds_a_secret(procs: Procs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_LOG_LEVEL", "debug")           # every process says all it can
    monkeypatch.setenv("ASR_FAILOVER_SHUTDOWN_TIMEOUT", "3")
    printed: list[tuple[str, str]] = []
    real_run = harness.run

    def recording(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120.0,
                  input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        res = real_run(argv, env=env, timeout=timeout, input=input)
        where = " ".join(Path(a).name if "/" in a else a for a in argv[:4])
        printed.extend((where, ln) for ln in (res.stdout + "\n" + res.stderr).splitlines())
        return res

    for module in (harness, replfix, sitefix):
        monkeypatch.setattr(module, "run", recording)

    cloud = Cloud(procs, tmp_path / "cloud").start()
    p = replfix.protect(cloud, tmp_path, encrypt=True)
    key = p.site.root / "prov1" / "customer.key"
    old_key = tmp_path / "old.key"
    old_key.write_bytes(p.site.key.read_bytes())
    p.site.new_key()                                       # supersedes the first key file
    res = p.site.register_agent("hv02", key=old_key)       # refused: its error must not echo the secret
    assert res.returncode == 23, res.stderr

    p.once()
    p.write(0, 0, 65536, 0x42)
    p.once()
    assert asr_job(p, "failover", "test", p.vm, "--encryption-key-file", str(key))["state"] == "Succeeded"
    assert asr_job(p, "failover", "test-complete", p.vm)["state"] == "Succeeded"
    assert asr_job(p, "failover", "planned", p.vm, "--encryption-key-file", str(key))["state"] == "Succeeded"
    assert asr_job(p, "failover", "commit", p.vm)["state"] == "Succeeded"
    assert asr_job(p, "failover", "planned", p.vm, "--direction", "to-primary",
                   "--encryption-key-file", str(key))["state"] == "Succeeded"
    assert asr_job(p, "failover", "commit", p.vm)["state"] == "Succeeded"
    p.once()
    out = tmp_path / "export.raw"
    res = cloud.asr("point", "export", p.vm, "latest", "--disk", "0", "--out", str(out), "--vault", VAULT[1],
                    "--encryption-key-file", str(key), check=False)
    if res.returncode == 2:        # the export's option has its older name
        res = cloud.asr("point", "export", p.vm, "latest", "--disk", "0", "--out", str(out), "--vault", VAULT[1],
                        "--key-file", str(key), check=False)
    assert res.returncode == 0 and out.stat().st_size > 0, res.stderr
    for proc in procs.procs:
        proc.stop()

    secrets = secrets_of(tmp_path, cloud)
    kinds = {what.split(" of ")[0].split(" (")[0] for what in secrets.values()}
    assert {"registration secret", "customer key", "private key line", "a vault CA's private key"} <= kinds, kinds
    assert sum("registration secret" in w for w in secrets.values()) == 2     # both key files
    lines = list(printed)
    daemons = set()
    for log in sorted(tmp_path.glob("*.log")):
        daemons.add(log.name.split(".")[0])
        lines += [(log.name, ln) for ln in log.read_text(errors="replace").splitlines()]
    assert {"cloudsvc", "provider-prov1", "agent-hv01"} <= daemons, daemons
    assert sum('"level": "debug"' in ln for _, ln in lines) > 0       # debug lines were written, and searched
    assert len(lines) > 500, len(lines)
    assert leaks(lines, secrets) == []
