"""Whether this cloud service process can serve: its metadata store answers.

Every call but a few needs the metadata store. With PostgreSQL the store can be away while
the process is fine; the process then fails nearly every call (MetadataUnavailable), so a
load balancer that asks the gRPC health service must hear NOT_SERVING and send the calls to a
process that reaches its database, and hear SERVING again once this one does.

:class:`Readiness` is the one owner of that answer: a thread probes the store (``SELECT 1``)
every ``PROBE_SECONDS``, and sooner when a call found it unreachable (the store's
``on_unavailable``), and tells its subscribers (the gRPC health service, ``cloudsvc.server``)
each change. The answer is the probe's, not a failed call's: one call meeting a connection that
PostgreSQL restarted under it must not take the process out of the balancer. Per process and
under no lease: each process's own connection to the database is what is judged.

SQLite needs no watch: the file is the process's own and is never unreachable (a full disk
fails writes, not the process's reachability), so the process stays SERVING.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from asrerrors import MetadataUnavailable
from metastore.database import Database

log = logging.getLogger(__name__)

PROBE_SECONDS = 2.0


class Readiness:
    def __init__(self, db: Database, stopping: threading.Event, interval: float = PROBE_SECONDS) -> None:
        self.db = db
        self.stopping = stopping
        self.interval = interval
        self.available = True   # the process starts only after its store answered (migrations)
        self._subscribers: list[Callable[[bool], None]] = []
        self._lock = threading.Lock()
        self._noticed = threading.Event()
        self._thread: threading.Thread | None = None
        db.on_unavailable.append(self._notice)

    def subscribe(self, fn: Callable[[bool], None]) -> None:
        """Call ``fn(available)`` now and on every change."""
        with self._lock:
            self._subscribers.append(fn)
            fn(self.available)

    def _notice(self) -> None:
        # a call found the store away: probe now rather than at the next round (while already
        # unavailable only the probe's round brings it back, so failing calls do not spin it)
        if self.available:
            self._noticed.set()

    def probe(self) -> bool:
        """Ask the store and publish the answer; whether it answered."""
        reason = ""
        # two tries: the first failure drops a connection that may only have been cut by a
        # restart of the server since the last probe, and a new connection decides
        for _ in range(2):
            try:
                self.db.one("SELECT 1")
                ok = True
                break
            except MetadataUnavailable as err:
                ok, reason = False, str(err)
        self._noticed.clear()   # this probe's own failure, or a call's meanwhile: answered now
        with self._lock:
            if ok == self.available:
                return ok
            self.available = ok
            for fn in self._subscribers:
                fn(ok)
        if ok:
            log.info("metadata store reachable again: serving")
        else:
            log.error("metadata store unreachable: not serving until it answers (%s)", reason)
        return ok

    def start(self) -> None:
        if self._thread is not None or self.db.engine == "sqlite":
            return

        def loop() -> None:
            while not self.stopping.is_set():
                self._noticed.wait(self.interval)
                if self.stopping.is_set():
                    return
                try:
                    self.probe()
                except Exception:  # noqa: BLE001 - keep watching; the next round asks again
                    log.exception("probing the metadata store failed")
                    self.stopping.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="readiness", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (``stopping`` is set by the caller)."""
        self._noticed.set()   # wake it from its wait
        if self._thread is not None:
            self._thread.join(timeout=10)
