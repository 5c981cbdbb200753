"""asr-cloudsvc as the Windows service ``AsrCloudService`` (see ``asrops.winservice``); its
configuration is the ``cloudsvc.toml`` that ``asr-cloudsvc init`` wrote in the data directory::

    python -m cloudsvc.winservice install --config D:\\asr\\cloudsvc.toml
    python -m cloudsvc.winservice start|stop|remove

The recovery site is built and tested on Linux; this entry point is here so that one
command line serves all three daemons, but only the provider and the agent are tested
without the POSIX-only modules (``tests/foundation/test_windows_portability.py``).
"""

from __future__ import annotations

import os
import sys

from asrops.lifecycle import Lifecycle
from asrops.winservice import Daemon, DaemonService, main
from cloudsvc import config as cfgmod
from cloudsvc.cli import serve


def _serve(config: str, life: Lifecycle) -> int:
    return serve(os.path.dirname(config), life)


def _check(config: str) -> object:
    return cfgmod.load(os.path.dirname(config))


class CloudService(DaemonService):
    _svc_name_ = "AsrCloudService"
    _svc_display_name_ = "Site Recovery cloud service"
    _svc_description_ = "The recovery site: vaults, recovery points, jobs and failover."
    daemon = Daemon(module="cloudsvc.winservice", run=_serve, check=_check)


if __name__ == "__main__":
    sys.exit(main(CloudService))
