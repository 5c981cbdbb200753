"""Issue 12: ``metrics_listen`` in the agent's and the provider's TOML (before, both refused the
key): absent or "" serves nothing; a HOST:PORT serves /metrics; anything else is ASR-0014
naming the file and the key, through the real command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import BIN, run

CASES = [("int", "metrics_listen = 9464\n", ["9464", "an integer"]),
         ("no port", 'metrics_listen = "127.0.0.1"\n', ['"127.0.0.1"', "HOST:PORT"]),
         ("bad port", 'metrics_listen = "127.0.0.1:0"\n', ["127.0.0.1:0", "from 1 to 65535"]),
         ("no host", 'metrics_listen = ":9464"\n', [":9464", "HOST:PORT"])]
BASE = {"asr-agent": 'state_dir = "state"\nvm_dir = "vms"\n', "asr-provider": 'state_dir = "state"\n'}


@pytest.mark.parametrize("tool", sorted(BASE))
@pytest.mark.parametrize("name,line,words", CASES, ids=[c[0] for c in CASES])
def test_a_bad_metrics_listen_is_refused(tmp_path: Path, tool: str, name: str, line: str, words: list[str]) -> None:
    path = tmp_path / "conf.toml"
    path.write_text(BASE[tool] + line)
    res = run([str(BIN / tool), "run", "--config", str(path)], timeout=60)
    assert res.returncode == 14, (res.stdout, res.stderr)
    assert "ASR-0014" in res.stderr and str(path) in res.stderr and "metrics_listen" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)


def test_metrics_listen_is_off_unless_set(tmp_path: Path) -> None:
    from agent.config import load as load_agent
    from provider.config import load as load_provider

    a, p = tmp_path / "a.toml", tmp_path / "p.toml"
    a.write_text(BASE["asr-agent"])
    p.write_text(BASE["asr-provider"] + 'metrics_listen = ""\n')
    assert load_agent(str(a)).metrics_listen == "" and load_provider(str(p)).metrics_listen == ""
    a.write_text(BASE["asr-agent"] + 'metrics_listen = "127.0.0.1:9466"\n')
    p.write_text(BASE["asr-provider"] + 'metrics_listen = "[::1]:9465"\n')
    assert load_agent(str(a)).metrics_listen == "127.0.0.1:9466"
    assert load_provider(str(p)).metrics_listen == "[::1]:9465"
