"""asr-provider as the Windows service ``AsrProvider`` (see ``asrops.winservice``)::

    python -m provider.winservice install --config C:\\ProgramData\\SiteRecovery\\provider.toml
    python -m provider.winservice start|stop|remove
"""

from __future__ import annotations

import sys

from asrops.winservice import Daemon, DaemonService, main
from provider.config import load
from provider.daemon import run


class ProviderService(DaemonService):
    _svc_name_ = "AsrProvider"
    _svc_display_name_ = "Site Recovery provider"
    _svc_description_ = ("Syncs this VMM site's clouds, hosts and VMs to the recovery vault and relays the "
                         "vault's commands to the site's agents.")
    daemon = Daemon(module="provider.winservice", run=run, check=load)


if __name__ == "__main__":
    sys.exit(main(ProviderService))
