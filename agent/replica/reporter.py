"""Tells the vault what this recovery host keeps (``Replication.ReportReplica``: metadata
only, never a chunk), after every durable point and every ``interval`` seconds, over the
agent's own cloud channel (its proxy settings included).

The answer ``paired=false`` means the vault no longer pairs the VM with this host: the replica
is released (its data is kept; ReleaseReplica with ``delete_data`` removes it). A cloud that
does not implement ReportReplica yet (UNIMPLEMENTED) is "not yet known": logged once, and the
reports go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from agent.replica.store import PointRecord, ReplicaHost
from asrclock import Clock
from asrpb import replication_pb2, replication_pb2_grpc

log = logging.getLogger(__name__)
REPORT_SECONDS = 30.0


def health_of(copy_frequency_s: float, last_received_at: float, now: float) -> tuple[str, str]:
    """The replica's health by the age of its latest point (the vault's rule: older than
    ``2F + 60 s`` Warning, ``6F + 300 s`` Critical)."""
    if last_received_at <= 0:
        return "Warning", "no point received yet"
    age = now - last_received_at
    if age > 6 * copy_frequency_s + 300:
        return "Critical", f"the latest point is {age:.0f}s old"
    if age > 2 * copy_frequency_s + 60:
        return "Warning", f"the latest point is {age:.0f}s old"
    return "Normal", ""


def disks_lag(records: list[PointRecord], held: str, now: float) -> float:
    """How long the replica disks have been behind: seconds since the first point newer than
    ``held``, the last one applied in full, was recorded (0 when that is the newest)."""
    ids = [r.point_id for r in records]
    newer = records[ids.index(held) + 1:] if held in ids else records
    return now - newer[0].committed_at if newer else 0.0


def apply_lag_bound(copy_frequency_s: float) -> float:
    """How long the disks may stay behind the newest point before the report says Warning:
    an apply normally finishes well within one copy interval; ``2F + 60 s`` (the vault's
    Warning age for a point) leaves room for a full apply of a large disk."""
    return 2 * copy_frequency_s + 60


class Reporter:
    def __init__(self, host: ReplicaHost, channel: grpc.Channel, clock: Clock, stopping: threading.Event,
                 interval: float = REPORT_SECONDS) -> None:
        self.host = host
        self.stub = replication_pb2_grpc.ReplicationStub(channel)
        self.clock = clock
        self.stopping = stopping
        self.interval = interval
        self._due = threading.Event()
        self._unimplemented_logged = False

    def point_made(self, vm_id: str) -> None:
        """A point became durable: report soon (on the reporter's thread, not the caller's)."""
        self._due.set()

    def build(self, vm_id: str) -> replication_pb2.ReplicaReport:
        p = self.host.pairings.get(vm_id)
        assert p is not None
        r = self.host.vm(vm_id)
        records = r.records()
        last = max((rec.committed_at for rec in records), default=0.0)
        freq = float(p.policy.copy_frequency_seconds or 300)
        now = self.clock.now()
        health, message = health_of(freq, last, now)
        st = r.disks.state()
        held = "" if st.applying else st.point_id
        if st.encrypted:
            health, message = "Warning", "points are encrypted with the customer's key: replica disks not applied"
        if r.apply_error and health == "Normal":
            health, message = "Warning", r.apply_error
        # while a point is being applied the disks hold none exactly (``held`` ""), but they are
        # behind only since the first point after the last one applied in full: measured from the
        # oldest point instead, an apply started by a point after a long outage read as "the
        # disks hold no point, 600s behind" and the report went Warning
        lag = disks_lag(records, st.point_id, now)
        if health == "Normal" and lag > apply_lag_bound(freq):
            health, message = "Warning", (f"the replica disks hold {held or 'no point'}, {lag:.0f}s behind the "
                                          "newest point")
        return replication_pb2.ReplicaReport(
            vm_id=vm_id, pairing_id=p.pairing_id, free_bytes=self.host.free_bytes(), health=health,
            message=message, last_received_at=last, applied_point_id=held,
            points=[replication_pb2.ReplicaPoint(point_id=rec.point_id, created_at=rec.created_at,
                                                 app_consistent=rec.kind == "app", logical_bytes=rec.logical_bytes,
                                                 stored_bytes=rec.stored_bytes, epoch=rec.epoch)
                    for rec in records])

    def report_all(self, release: Callable[[str], None]) -> int:
        """One report per held replica; returns how many the vault answered."""
        answered = 0
        for p in self.host.pairings.all():
            try:
                ack = self.stub.ReportReplica(self.build(p.vm_id), timeout=10)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    if not self._unimplemented_logged:
                        log.info("the vault does not take replica reports yet (ReportReplica unimplemented); "
                                 "pairings are kept as they are")
                        self._unimplemented_logged = True
                    return answered
                log.debug("replica report of %s failed: %s", p.vm_name, exc.code())
                continue
            answered += 1
            if not ack.paired:
                log.warning("the vault no longer pairs this host with the VM: replica released",
                            extra={"fields": {"vm": p.vm_name, "vm_id": p.vm_id, "pairing": p.pairing_id}})
                release(p.vm_id)
        return answered

    def stop(self) -> None:
        self._due.set()   # the caller set ``stopping``: the loop ends now, not after its wait

    def run(self, release: Callable[[str], None], beat: Callable[[], None] = lambda: None) -> None:
        while not self.stopping.is_set():
            beat()
            # cleared before the reports are built, not after the wait: a point made while they
            # are sent sets it again, and the next report follows at once instead of a whole
            # interval later
            self._due.clear()
            try:
                self.report_all(release)
            except Exception:  # noqa: BLE001 - the report thread must outlive a damaged replica
                log.exception("replica reports failed")
            self._due.wait(self.interval)
