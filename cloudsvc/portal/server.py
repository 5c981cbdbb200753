"""Serving the portal: cheroot's threaded WSGI server over TLS with the service's server
certificate, in a thread of the cloud service process. Built and started by the composition
root (``CloudService.start``); ``close`` stops it."""

from __future__ import annotations

import logging
import os
import ssl
import threading
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from asrerrors import InvalidConfig

log = logging.getLogger(__name__)


class PortalServer:
    def __init__(self, app: Any, listen: str, pki_dir: str, source: str) -> None:
        host, _, port = listen.rpartition(":")
        self.server = wsgi.Server((host.strip("[]"), int(port)), app, numthreads=8, server_name="asr-portal")
        adapter = BuiltinSSLAdapter(os.path.join(pki_dir, "server.pem"), os.path.join(pki_dir, "server.key"))
        adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.server.ssl_adapter = adapter
        self.listen = listen
        self.source = source
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self.server.prepare()   # binds now: a taken port is an error of ``serve``, not of a thread
        except OSError as exc:
            raise InvalidConfig(f"{self.source}: portal_listen = {self.listen!r} cannot be used: "
                                f"{exc.strerror or exc}",
                                causes=("Another process listens on that port.",
                                        "The host is not an address of this machine."),
                                action=f"Choose a free port on a local address for portal_listen in {self.source}.",
                                ) from exc
        self._thread = threading.Thread(target=self.server.serve, name="portal", daemon=True)
        self._thread.start()
        log.info("portal serving", extra={"fields": {"portal_listen": self.listen}})

    def close(self) -> None:
        if self._thread is not None:
            self.server.stop()
            self._thread.join(timeout=10)
            self._thread = None
