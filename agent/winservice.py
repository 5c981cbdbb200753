"""asr-agent as the Windows service ``AsrAgent`` (see ``asrops.winservice``)::

    python -m agent.winservice install --config C:\\ProgramData\\SiteRecovery\\agent.toml
    python -m agent.winservice start|stop|remove
"""

from __future__ import annotations

import sys

from agent.config import load
from agent.daemon import run
from asrops.winservice import Daemon, DaemonService, main


class AgentService(DaemonService):
    _svc_name_ = "AsrAgent"
    _svc_display_name_ = "Site Recovery agent"
    _svc_description_ = "Tracks this host's VM disk changes and replicates them to the recovery vault."
    daemon = Daemon(module="agent.winservice", run=run, check=load)


if __name__ == "__main__":
    sys.exit(main(AgentService))
