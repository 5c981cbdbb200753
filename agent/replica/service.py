"""The recovery host's side of a primary's cycle: who may ship which VM here, and the steps
of the cycle on the replica store (the wire is ``replica_api``).

Authorisation, on every call: the TLS layer admits only certificates of this host's vault
(the vault CA is the only trust anchor, ``channel``); the interceptor admits only agents of
this vault; then, per VM, only the ``source_host`` of the pairing AcceptReplica recorded, and
only with that pairing's id (``asr-pairing-id`` request metadata). Anything else is
PermissionDenied (ASR-0032) naming what did not match. A session from an epoch older than the
newest this host has seen for the VM is Fenced (ASR-0044).

Session tokens are ``<vm_id>/<epoch>/<store session id>``: each call finds its VM (and checks
the caller against its pairing) without a table of sessions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from agent.replica.applier import Applier
from agent.replica.pairings import Pairing
from agent.replica.store import ReplicaHost, ReplicaVm
from asrerrors import Fenced, NotFound, PermissionDenied, StateConflict
from certs.identity import Identity
from cloudsvc.vaultstore import DiskDelta, PointInfo, PointKind

log = logging.getLogger(__name__)


class ReplicaService:
    def __init__(self, host: ReplicaHost, vault_id: str, applier: Applier,
                 on_point: Callable[[str], None] = lambda vm_id: None) -> None:
        self.host = host
        self.vault_id = vault_id
        # brings the replica disks to each new point after CommitPoint has answered
        self.applier = applier
        # called after every durable point (the reporter tells the vault at once)
        self.on_point = on_point
        self._guard = threading.Lock()

    def check_caller(self, caller: Identity, method: str) -> None:
        """The interceptor's check: an agent of this host's vault."""
        if caller.vault_id != self.vault_id:
            raise PermissionDenied(f"agent {caller.name!r} belongs to another vault",
                                   action="Only hosts of this host's vault may ship replicas here.")

    def admit(self, caller: Identity, vm_id: str, pairing_id: str) -> Pairing:
        p = self.host.pairings.get(vm_id)
        if p is None:
            raise PermissionDenied(f"this host holds no replica of VM {vm_id}",
                                   causes=("The vault has not paired this VM with this host (AcceptReplica), "
                                           "or the pairing was released.",))
        if caller.name != p.source_host:
            raise PermissionDenied(f"host {caller.name!r} may not ship VM {p.vm_name} here: its source is "
                                   f"{p.source_host!r}")
        if pairing_id != p.pairing_id:
            raise PermissionDenied(f"pairing {pairing_id or '(none)'!r} is not the pairing of VM {p.vm_name} "
                                   "on this host", causes=("The VM was paired again; the primary holds an older "
                                                           "replica target.",))
        return p

    def _session(self, caller: Identity, token: str, pairing_id: str) -> tuple[ReplicaVm, Pairing, int, str]:
        parts = token.split("/")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
            raise NotFound(f"upload session {token!r} is malformed")
        vm_id, epoch, sid = parts[0], int(parts[1]), parts[2]
        p = self.admit(caller, vm_id, pairing_id)
        self._check_epoch(p, epoch)
        r = self.host.vm(vm_id)
        if r.store.db.session_vm(sid) != vm_id:
            raise NotFound(f"upload session {sid} is not open (ended or expired)", action="Begin a new cycle.")
        return r, p, epoch, sid

    def _check_epoch(self, p: Pairing, epoch: int) -> None:
        held = self.host.pairings.raise_epoch(p.vm_id, epoch)
        if epoch and epoch < held:
            raise Fenced(f"epoch {epoch} of VM {p.vm_name} is older than this replica's epoch {held}",
                         causes=("Another host became the VM's active side.",))

    # -- the cycle ---------------------------------------------------------------------------------
    def begin_cycle(self, caller: Identity, vm_id: str, epoch: int, pairing_id: str
                    ) -> tuple[str, PointInfo | None]:
        p = self.admit(caller, vm_id, pairing_id)
        self._check_epoch(p, epoch)
        r = self.host.vm(vm_id)
        sid = r.store.begin_session(vm_id)
        return f"{vm_id}/{epoch}/{sid}", r.latest()

    def missing(self, caller: Identity, token: str, pairing_id: str, ids: list[bytes]) -> list[bytes]:
        r, _, _, sid = self._session(caller, token, pairing_id)
        return r.store.missing(ids, session_id=sid)

    def upload(self, caller: Identity, token: str, pairing_id: str) -> tuple[ReplicaVm, str]:
        r, _, _, sid = self._session(caller, token, pairing_id)
        return r, sid

    def commit(self, caller: Identity, token: str, pairing_id: str, vm_id: str, disks: list[DiskDelta],
               base: str | None, kind: PointKind, created_at: float, uploaded_bytes: int,
               after: Callable[[Callable[[], None]], bool] = lambda fn: False) -> PointInfo:
        """Make the point durable and recorded; the applier and the reporter are told through
        ``after`` (the wire's "when the answer has gone" hook: ``ServicerContext.add_callback``)
        or at once when it declines. Waking the applier before the answer has gone made its
        apply compete for the GIL with the answer itself: a 1% incremental's commit took
        0.05 s against the vault's 0.03 s (docs/benchmarks.md, "Site to site")."""
        r, p, epoch, sid = self._session(caller, token, pairing_id)
        if vm_id != r.vm_id:
            raise StateConflict(f"upload session {sid} belongs to another VM")
        point = r.commit(sid, disks, base, kind, created_at, epoch, uploaded_bytes, p)
        log.info("replica point committed", extra={"fields": {
            "vm": p.vm_name, "point": point.point_id, "kind": kind, "source": caller.name,
            "uploaded_bytes": uploaded_bytes}})
        # durable and recorded: the primary may be answered; the disks follow on the applier

        def tell() -> None:
            self.applier.point_made(vm_id)
            self.on_point(vm_id)

        if not after(tell):
            tell()
        return point

    def wait_applied(self, vm_id: str, point_id: str, timeout: float) -> bool:
        """Wait until the VM's replica disks hold ``point_id`` or a newer point (a failover
        on this host starts the VM from the disks only then); False after ``timeout`` s."""
        return self.applier.wait_applied(vm_id, point_id, timeout)

    def block_map(self, caller: Identity, vm_id: str, pairing_id: str, point_id: str, disk: int
                  ) -> Iterator[tuple[int, bytes]]:
        self.admit(caller, vm_id, pairing_id)
        r = self.host.vm(vm_id)
        if all(rec.point_id != point_id for rec in r.records()):
            raise NotFound(f"point {point_id} is not a point of the replica of VM {vm_id}")
        return r.store.block_map(point_id, disk)
