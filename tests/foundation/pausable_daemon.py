"""A real daemon with its main loop's fault point armed (tests only; production daemons have
no such hook):

    python tests/foundation/pausable_daemon.py DIR cloudsvc DATA_DIR
    python tests/foundation/pausable_daemon.py DIR provider|agent CONFIG

While ``DIR/arm`` exists, the main loop's next turn stops at its start, writes ``DIR/fired``
and waits until ``DIR/release`` exists (or a stop is requested); then it removes all three
and carries on. The daemon is otherwise exactly what ``asr-cloudsvc serve`` / ``asr-provider
run`` / ``asr-agent run`` runs, signals included.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from asrops.lifecycle import Lifecycle


def main(argv: list[str]) -> int:
    directory, role, target = Path(argv[0]), argv[1], argv[2]
    arm, fired, release = directory / "arm", directory / "fired", directory / "release"
    life: Lifecycle

    def hold() -> None:
        if not arm.exists():
            return
        fired.write_text("held\n")
        while not release.exists() and not life.stopping.is_set():
            time.sleep(0.02)
        for f in (arm, fired, release):
            f.unlink(missing_ok=True)

    life = Lifecycle(before_turn=hold)
    life.install_signal_handlers()
    if role == "cloudsvc":
        from cloudsvc.cli import serve

        return serve(target, life)
    if role == "provider":
        from provider.daemon import run as run_provider

        return run_provider(target, life)
    from agent.daemon import run as run_agent

    return run_agent(target, life)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
