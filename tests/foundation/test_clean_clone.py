"""Issue 2, must-show 5: the README's two commands work on a clean clone of the repository.

Clones the committed state, then runs the demo command and the test command (limited to
the unit tests: the full suite is what CI itself runs) exactly as the README writes them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.harness import REPO, base_env


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "the README opens with a sh block of commands"
    cmds = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert len(cmds) == 2, cmds
    return cmds


def test_readme_commands_on_a_clean_clone(tmp_path: Path) -> None:
    demo, tests = readme_commands()
    assert demo == "bash deploy/demo.sh" and tests == "bash deploy/test.sh"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = base_env(ASR_TOOLS_FROM=str(REPO / ".tools"))
    env.pop("VIRTUAL_ENV", None)
    res = subprocess.run(demo.split(), cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Connected" in res.stdout and "all daemons stopped" in res.stdout
    res = subprocess.run([*tests.split(), "tests/foundation/test_units.py"], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.search(r"\d+ passed", res.stdout), res.stdout[-2000:]
    # nothing left running from the clone
    ps = subprocess.run(["pgrep", "-f", str(clone)], capture_output=True, text=True)
    assert ps.stdout.strip() == "", ps.stdout
