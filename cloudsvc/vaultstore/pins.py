"""Pins: a point that something is reading (an export, a verify, a block map, a commit built
on it) or that a failover needs must not be deleted under it.

A pin is a row in the store's index DB, so every cloud-service process sharing the store
sees it. Retention deletes a point only in a transaction that first finds no pin in force on
it (``IndexDb.pin_holders``); taking a pin inserts the row and checks that the point still
exists in one transaction. The two transactions are serialised by SQLite, so either the
delete came first and the pin fails with NotFound (never a false DataCorrupt half-way
through a read), or the pin came first and the delete leaves the point alone.

Two kinds:

* leased (``VaultStore.pin``, a ``with`` block): ``expires_at`` = now + lease on the store's
  injectable clock. While the block runs, this process renews the lease every
  ``renew_every_s`` seconds of real time (a slow reader stalled by its client keeps its
  pin) and whenever it applies retention (so a jump of a test's clock cannot expire a pin
  that is still held). A process that dies stops renewing: its pins expire after the lease
  and the collector forgets them.
* named (``VaultStore.pin_until_released``): no expiry; held until ``release(holder)``. For
  what outlives any call, such as a recovered VM's point.
"""

from __future__ import annotations

import logging
import secrets
import threading

from asrclock import Clock
from asrerrors import AsrError, NotFound
from cloudsvc.vaultstore.indexdb import IndexDb
from cloudsvc.vaultstore.records import PinInfo, PointInfo
from metastore.database import Conn

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 600.0


class PinKeeper:
    """This process's pins on one store: takes them, renews the leased ones, drops them."""

    def __init__(self, db: IndexDb, clock: Clock, lease_s: float, renew_every_s: float) -> None:
        if lease_s <= 0 or renew_every_s <= 0:
            raise ValueError("a pin lease and its renewal interval must be positive")
        self.db = db
        self.clock = clock
        self.lease_s = lease_s
        self.renew_every_s = renew_every_s
        self._held: dict[str, PinInfo] = {}  # the leased pins this process holds, by id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def take(self, point_id: str, holder: str, leased: bool = True) -> tuple[PinInfo, PointInfo]:
        """Pin ``point_id`` for ``holder``; NotFound if the point does not exist (any more)."""
        now = self.clock.now()
        if leased:
            pin = PinInfo("pin-" + secrets.token_hex(8), point_id, holder, now + self.lease_s)
        else:  # one row per holder and point: pinning twice is idempotent
            pin = PinInfo(f"named:{holder}:{point_id}", point_id, holder, None)
        with self.db.tx() as conn:
            self.db.pin_insert(conn, pin, now)
            point = self._point(conn, point_id)
            if point is None:  # the transaction rolls the pin back
                raise NotFound(
                    f"recovery point {point_id} does not exist (retention or a delete removed it)",
                    action="List the VM's recovery points and choose one that exists.",
                )
        if leased:
            with self._lock:
                self._held[pin.pin_id] = pin
                self._start_renewer()
        return pin, point

    def _point(self, conn: Conn, point_id: str) -> PointInfo | None:
        if conn.execute("SELECT 1 FROM points WHERE point_id = ?", (point_id,)).fetchone() is None:
            return None
        return self.db.point(point_id)

    def drop(self, pin: PinInfo) -> None:
        with self._lock:
            self._held.pop(pin.pin_id, None)
        self.db.pin_delete(pin.pin_id)

    def held(self) -> list[PinInfo]:
        with self._lock:
            return list(self._held.values())

    def renew_in(self, conn: Conn, now: float) -> None:
        """Renew this process's leased pins inside the caller's transaction. A row another
        process's collector removed as expired (this process stalled past the lease) is put
        back: the pin is still held."""
        for pin in self.held():
            renewed = PinInfo(pin.pin_id, pin.point_id, pin.holder, now + self.lease_s)
            self.db.pin_insert(conn, renewed, now)

    def renew(self) -> None:
        if self.held():
            with self.db.tx() as conn:
                self.renew_in(conn, self.clock.now())

    def _start_renewer(self) -> None:
        if self._renewer is None and not self._stop.is_set():
            self._renewer = threading.Thread(target=self._renew_loop, name="pin-renewer", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_every_s):
            try:
                self.renew()
            except AsrError:  # a full disk, a busy index: the next round tries again
                log.exception("renewing recovery point pins failed")

    def stop(self) -> None:
        """Stop renewing (the store is closing). Pins still held stay in the DB and expire
        after their lease, as those of a killed process do."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
