"""Garbage collection: mark everything reachable, then delete or repack packs with dead blobs,
without stopping uploads.

The invariant: **a blob is deleted only when no point and no open session references it.**
The collector holds no lock of the store while it marks, reads, writes or deletes packs, so
``missing``, ``put_chunks`` and ``commit_point`` (of this process or another one sharing the
index) proceed meanwhile. What keeps the invariant without the lock:

1. *Candidates are fixed first.* Only packs ``live`` when the collection starts are looked
   at. A pack sealed later (new uploads, new tree nodes) is never a candidate, so its blobs
   need no marking.
2. *Mark* (no lock): every tree node and chunk reachable from the points that exist, into
   the TEMP table ``reach``; the marked point ids into ``marked``. A subtree already marked
   is not walked again, so marking costs in proportion to the distinct nodes, not to the
   points times the disk size. A damaged tree node aborts the collection before anything is
   deleted: an incomplete mark must never drive a sweep.
3. *Uploads protect before they trust.* Two kinds of protection, both committed before
   the check that trusts them:

   * *By age*, for what a session adds. Every pack is numbered from one counter in the
     index when it is sealed (``pack_begin``: after its content is fixed), and a session
     takes the counter's value when it opens, so a pack holding a blob the session sent
     is numbered above the session. A collection never examines a pack numbered above the
     oldest open session (read after the candidates, so a session opened since is numbered
     at least as high as every candidate). A first copy thus writes no protection rows;
     until 2026-12-03 it wrote one per chunk, ~a fifth of the cloud service's CPU.
   * *By id*, for what a session reuses: an id ``missing`` or ``put_chunks`` finds stored
     already, a point's id the commit finds in a pack numbered at or below the session
     (``_absent``), a tree node reused. The id is found, protected (a ``session_chunks``
     row), and found again.

   A session the collector expires (idle past ``session_ttl_s``) keeps nothing any more;
   its commit inserts the point only in a transaction that still finds the session, and
   refuses otherwise.
4. *Every deletion re-checks inside its own index transaction* (BEGIN IMMEDIATE, so no
   protection or point insert can interleave): if a point exists that was not marked (one
   committed since), the transaction is abandoned, that point is marked, and the step is
   retried; a blob in ``reach`` or in ``session_chunks`` *as of that transaction* is never
   dropped. A protection committed before the transaction is seen by it; one committed
   after it finds the blob's row gone, so the upload reports it missing (or the commit
   refuses) instead of trusting a deleted blob.
5. A new point's tree shares subtrees with its base point; ``commit_point`` pins the base
   until the new row exists, so those subtrees are reachable from a point (the base, or the
   new one by step 4) throughout.

Sweep, per candidate pack, crash-safe at every step:

* no kept blob: in one transaction (with the re-check) drop its chunk rows and mark it
  ``deleting``; then delete the object; then forget the row.
* some dead bytes (more than ``min_dead_fraction`` of the pack): copy its kept blobs (hashes
  re-checked) into a new pack; the new pack is put durably *before* one transaction moves
  the rows to it and marks the old pack ``deleting``; a blob protected after the copy keeps
  the old pack alive (it stays ``live``). Only then is the old object deleted.
* Readers that looked up a row just before a repack moved it follow the row once when the
  old pack is gone (``VaultStore.fetch_blobs``).

Group frames (several chunks compressed in one frame, each member with its own index row at
the frame's location): a pack's live and dead bytes count such a frame once, live if any of
its members is kept. A repack copies a kept group frame once, whole, and moves the rows of
its kept members; its dead members' rows go with the old pack. A group frame none of whose
members is kept is reclaimed like any dead blob. A *partly* dead group frame of an
unencrypted VM is *regrouped*: the repack writes a new frame of its live members only
(``chunkfmt.regroup``: decompressed, recompressed, each member read back before the frame
is used) and moves their rows to it, so a group does not keep dead bytes until its last
member dies. Without this, scattered overwrites (a database's) kept nearly every old block
of a ``strong`` VM for as long as any neighbour of it lived (bench/group_space.py). Such a
pack's dead share counts the dead members' part of each such frame (its length times the
dead fraction of its members), read from the frame's header, so a pack whose only waste is
in partly dead groups is repacked too. An *encrypted* partly dead group stays whole: the
cloud cannot open it, so its dead members' bytes are kept until every member is dead, and
it never makes its pack a candidate (a repack would gain nothing, every collection); its
header is read once per process (``VaultStore.sealed_groups``: packs never change).

A crash leaves either a ``writing`` pack (removed once older than the grace period; its blobs
were never indexed) or a ``deleting`` pack (deleted at the start of the next collection).
This assumes one collector per vault store at a time (``VaultStore`` serialises its own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from asrerrors import DataCorrupt, StateConflict
from chunkfmt import HEADER_SIZE, ZERO_ID, regroup, rewritable_group
from cloudsvc.vaultstore import merkle
from cloudsvc.vaultstore.indexdb import PackRow
from cloudsvc.vaultstore.packfile import KIND_CHUNK, PackBuilder, blob_hash, pack_name, pack_overhead
from cloudsvc.vaultstore.records import GcStats, PointInfo
from metastore.database import Conn

if TYPE_CHECKING:

    from cloudsvc.vaultstore.store import VaultStore

# A blob the collector must keep: reachable from a marked point, or protected by a session.
_KEPT = "(c.id IN (SELECT id FROM reach) OR c.id IN (SELECT id FROM session_chunks))"
_SETTLE_ATTEMPTS = 100


class _Marker:
    """The mark of one collection: TEMP tables on the collecting thread's connection."""

    def __init__(self, store: VaultStore) -> None:
        self.store = store
        # unqualified names: both engines look in the connection's temporary tables first
        store.db.temp_table("reach", "id BLOB PRIMARY KEY")
        store.db.temp_table("marked", "point_id TEXT PRIMARY KEY")

    def close(self) -> None:
        for table in ("reach", "marked"):
            self.store.db.drop_temp(table)

    def mark(self, points: Iterable[PointInfo], checkpoint: Callable[[], None] = lambda: None) -> int:
        store, db = self.store, self.store.db

        def first_visit(nid: bytes) -> bool:
            return db.fill_temp("INSERT INTO reach VALUES (?) ON CONFLICT DO NOTHING", [(nid,)]) > 0

        count = 0
        for point in points:
            checkpoint()
            for disk in point.disks:
                for level, _start, _nid, node in merkle.iter_nodes(
                    store._read_node,
                    disk.root,
                    merkle.block_count(disk.virtual_size),
                    disk.fanout,
                    descend=first_visit,
                ):
                    if level == 0:
                        db.fill_temp("INSERT INTO reach VALUES (?) ON CONFLICT DO NOTHING",
                                     [(c,) for c in node.ids if c != ZERO_ID])
            db.fill_temp("INSERT INTO marked VALUES (?) ON CONFLICT DO NOTHING", [(point.point_id,)])
            count += 1
        return count

    def settled(self, step: Callable[[Conn], None]) -> None:
        """Run ``step`` in an index transaction in which every existing point is marked
        (rule 4 of the module doc), marking points committed meanwhile first."""
        db = self.store.db
        for _ in range(_SETTLE_ATTEMPTS):
            with db.tx() as conn:
                new = [r[0] for r in conn.execute(
                    "SELECT point_id FROM points WHERE point_id NOT IN (SELECT point_id FROM marked)")]
                if not new:
                    step(conn)
                    return
            # Outside the transaction: marking reads packs.
            self.mark(p for p in (db.point(pid) for pid in new) if p is not None)
        raise StateConflict("garbage collection gave up: new recovery points kept arriving while it swept",
                            action="Nothing was lost; the next collection tries again.")


def collect(store: VaultStore, checkpoint: Callable[[], None] = lambda: None) -> GcStats:
    """``checkpoint`` runs between the steps of a long collection (before marking each point, before
    each pack it drops or copies): the cloud's maintenance renews its lease there. It may raise
    to stop the collection, which is safe at each of those places: every step before is
    complete and the next not begun (a repack's copies not yet written are simply dropped)."""
    db, backend = store.db, store.backend
    now = store.clock.now()
    stats = GcStats(bytes_before=store.storage_bytes())

    for sid in db.sessions_idle_since(now - store.session_ttl_s):
        db.session_close(sid)
        stats.sessions_expired += 1
    store._pins.renew()  # this process's own pins are not expired, however long it stalled
    db.pins_expire(now)
    # Finish what an interrupted collection or upload left behind.
    for row in db.packs("deleting"):
        backend.delete(row.name)
        db.pack_forget(row.name)
    for row in db.packs("writing"):
        if row.created_at < now - store.writing_grace_s:
            backend.delete(row.name)
            db.pack_forget(row.name)

    candidates = db.packs("live")  # rule 1: packs sealed from now on are never touched
    # Rule 3, by age: read after the candidates, so a session opened since is numbered at
    # least as high as each of them (and holds none of their blobs).
    oldest = db.oldest_session_seq()
    if oldest is not None:
        stats.packs_kept_by_age = sum(row.seq > oldest for row in candidates)
        candidates = [row for row in candidates if row.seq <= oldest]
    marker = _Marker(store)
    try:
        stats.live_points = marker.mark(db.points(), checkpoint)
        dead_packs, to_repack = _classify(store, candidates, stats)
        for row in dead_packs:
            checkpoint()
            if _drop_dead_pack(store, marker, row):
                backend.delete(row.name)
                db.pack_forget(row.name)
                stats.packs_deleted += 1
        _repack(store, marker, to_repack, stats, checkpoint)
    finally:
        marker.close()
    stats.bytes_after = store.storage_bytes()
    return stats


# A pack to repack, with the number of index rows at each (offset, length) of it: a group
# frame's members share one location, so fewer kept rows than that means dead members.
_Repack = tuple[PackRow, dict[tuple[int, int], int]]


def _classify(store: VaultStore, candidates: list[PackRow], stats: GcStats) -> tuple[list[PackRow], list[_Repack]]:
    """Split the candidates into packs with nothing kept and packs worth repacking."""
    db = store.db
    dead_packs: list[PackRow] = []
    to_repack: list[_Repack] = []
    for row in candidates:
        # A group frame's members share one location: its bytes count once (live if any
        # member is kept), its trailer entries once per member.
        locations = [(int(off), int(length), int(n), int(k)) for off, length, n, k in db.query(
            f'SELECT c."offset", c.length, COUNT(*), SUM(CASE WHEN {_KEPT} THEN 1 ELSE 0 END) '
            'FROM chunks c WHERE c.pack = ? GROUP BY c."offset", c.length', (row.name,))]
        kept = sum(k for _, _, _, k in locations)
        kept_bytes = sum(length for _, length, _, k in locations if k)
        total = sum(n for _, _, n, _ in locations)
        stats.live_blobs += kept
        dead_bytes = row.size - pack_overhead(kept) - kept_bytes
        bound = store.min_dead_fraction * row.size
        if kept == 0:
            dead_packs.append(row)
            stats.deleted_blobs += total
        elif dead_bytes > 0 and (dead_bytes > bound or
                                 dead_bytes + _regroup_gain(store, row.name, locations, bound - dead_bytes) > bound):
            to_repack.append((row, {(off, length): n for off, length, n, _ in locations}))
            stats.deleted_blobs += total - kept
    return dead_packs, to_repack


def _regroup_gain(store: VaultStore, pack: str, locations: list[tuple[int, int, int, int]], need: float) -> int:
    """The bytes that regrouping this pack's partly dead unencrypted group frames would free
    (each frame's length times its dead members' share), when even all of its partly dead
    frames could free more than ``need``; 0 otherwise. Reads only those frames' headers."""
    partly = [(off, length, n, k) for off, length, n, k in locations
              if 0 < k < n and (pack, off) not in store.sealed_groups]
    if sum(length * (n - k) // n for _, length, n, k in partly) <= need:
        return 0
    gain = 0
    for off, length, n, k in partly:
        if rewritable_group(store.backend.get(pack, off, HEADER_SIZE)):
            gain += length * (n - k) // n
        else:  # encrypted: remembered, so later collections do not read it again
            if len(store.sealed_groups) > 1_000_000:
                store.sealed_groups.clear()
            store.sealed_groups.add((pack, off))
    return gain


def _drop_dead_pack(store: VaultStore, marker: _Marker, row: PackRow) -> bool:
    """Drop a pack's rows and mark it ``deleting`` unless, at this moment, one of its blobs
    is kept after all; True if it was dropped (its object may then be deleted)."""
    dropped = False

    def step(conn: Conn) -> None:
        nonlocal dropped
        kept = conn.execute(f"SELECT COUNT(*) FROM chunks c WHERE c.pack = ? AND {_KEPT}", (row.name,)).fetchone()[0]
        if kept:
            return  # protected since the mark: it is live again; a later collection decides
        conn.execute("DELETE FROM chunks WHERE pack = ?", (row.name,))
        conn.execute("UPDATE packs SET state = 'deleting' WHERE name = ?", (row.name,))
        dropped = True

    marker.settled(step)
    return dropped


def _repack(store: VaultStore, marker: _Marker, rows: list[_Repack], stats: GcStats,
            checkpoint: Callable[[], None]) -> None:
    db, backend = store.db, store.backend
    builder = PackBuilder()
    consumed: list[str] = []

    def write() -> None:
        nonlocal builder, consumed
        if not consumed:
            return
        new_name = ""
        if len(builder):
            data = builder.seal()
            new_name = pack_name(data)
            db.pack_begin(new_name, len(data), store.clock.now())
            backend.put(new_name, data)
        retired: list[str] = []

        def step(conn: Conn) -> None:
            retired.clear()
            if new_name:
                db.pack_commit(conn, new_name, builder.entries, replace=True)
            for old in consumed:
                # Rows still in the old pack were not copied; if one of them is kept now
                # (protected after the copy), the old pack stays live with it.
                left = conn.execute(f"SELECT COUNT(*) FROM chunks c WHERE c.pack = ? AND {_KEPT}",
                                    (old,)).fetchone()[0]
                if left:
                    continue
                conn.execute("DELETE FROM chunks WHERE pack = ?", (old,))
                conn.execute("UPDATE packs SET state = 'deleting' WHERE name = ?", (old,))
                retired.append(old)

        marker.settled(step)
        for old in retired:
            backend.delete(old)
            db.pack_forget(old)
            stats.packs_deleted += 1
        stats.packs_written += 1 if new_name else 0
        builder, consumed = PackBuilder(), []

    for row, members in rows:
        checkpoint()
        kept = db.query(
            f'SELECT c.id, c.kind, c."offset", c.length, c.hash FROM chunks c '
            f'WHERE c.pack = ? AND {_KEPT} ORDER BY c."offset"',
            (row.name,),
        )
        data = backend.get(row.name)
        # Kept rows by location: a group frame's kept members share one, copied (and its
        # hash checked) once; its dead members get no entry in the new pack, and when the
        # frame can be opened, no bytes either (regrouped: see the module doc).
        by_loc: dict[tuple[int, int, bytes], tuple[int, list[bytes]]] = {}
        for cid, kind, offset, length, digest in kept:
            by_loc.setdefault((offset, length, digest), (kind, []))[1].append(cid)
        blobs: list[tuple[int, list[bytes], bytes, bytes | None]] = []
        regrouped = 0
        for (offset, length, digest), (kind, ids) in by_loc.items():
            frame = data[offset : offset + length]
            if blob_hash(frame) != digest:
                break
            if kind == KIND_CHUNK and len(ids) < members.get((offset, length), 0) and rewritable_group(frame):
                try:
                    smaller = regroup(frame, ids)
                except DataCorrupt:
                    break  # a kept member the frame does not hold: damage, as a bad hash
                blobs.append((kind, ids, smaller, None))  # hashed when the pack seals
                regrouped += 1
            else:
                blobs.append((kind, ids, frame, digest))
        else:
            stats.groups_regrouped += regrouped
            for kind, ids, frame, maybe_digest in blobs:
                builder.add_shared(kind, ids, frame, maybe_digest)
            consumed.append(row.name)
            if builder.size >= store.pack_size:
                write()
            continue
        # Copying a damaged blob would hide the damage; leave the pack for verify to report.
        stats.damaged_packs.append(row.name)
    write()
