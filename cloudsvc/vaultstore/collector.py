"""Garbage collection: mark everything reachable, then delete or repack packs with dead blobs.

Mark: every tree node and chunk reachable from a live point, plus every id an open upload
session has sent or been told is present, goes into a temporary table. A subtree already
marked is not walked again, so marking costs in proportion to the distinct nodes, not to the
points times the disk size. A damaged tree node aborts the collection before anything is
deleted: an incomplete mark must never drive a sweep.

Sweep, per pack, crash-safe at every step:

* no live blob: in one transaction drop its chunk rows and mark it ``deleting``; then delete
  the object; then forget the row.
* some dead bytes (more than ``min_dead_fraction`` of the pack): copy its live blobs (hashes
  re-checked) into a new pack; the new pack is put durably *before* one transaction moves the
  rows to it and marks the old pack ``deleting``; only then is the old object deleted.

A crash leaves either a ``writing`` pack (removed once older than the grace period; its blobs
were never indexed) or a ``deleting`` pack (deleted at the start of the next collection).
This assumes one collector per vault at a time; concurrent uploads in other processes are
safe because their chunks are protected by their sessions before the pack is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chunkfmt import ZERO_ID
from cloudsvc.vaultstore import merkle
from cloudsvc.vaultstore.indexdb import PackRow
from cloudsvc.vaultstore.packfile import PackBuilder, blob_hash, pack_name, pack_overhead
from cloudsvc.vaultstore.records import GcStats

if TYPE_CHECKING:
    from cloudsvc.vaultstore.store import VaultStore


def collect(store: VaultStore) -> GcStats:
    db, backend = store.db, store.backend
    now = store.clock.now()
    stats = GcStats(bytes_before=store.storage_bytes())

    for sid in db.sessions_idle_since(now - store.session_ttl_s):
        db.session_close(sid)
        stats.sessions_expired += 1
    # Finish what an interrupted collection or upload left behind.
    for row in db.packs("deleting"):
        backend.delete(row.name)
        db.pack_forget(row.name)
    for row in db.packs("writing"):
        if row.created_at < now - store.writing_grace_s:
            backend.delete(row.name)
            db.pack_forget(row.name)

    points = db.points()
    stats.live_points = len(points)
    _mark(store, points)

    dead_packs: list[PackRow] = []
    to_repack: list[PackRow] = []
    for row in db.packs("live"):
        live = db.query(
            "SELECT COUNT(*), COALESCE(SUM(c.length), 0) FROM chunks c "
            "JOIN temp.reach r ON r.id = c.id WHERE c.pack = ?",
            (row.name,),
        )[0]
        total = db.query("SELECT COUNT(*) FROM chunks WHERE pack = ?", (row.name,))[0][0]
        stats.live_blobs += live[0]
        stats.deleted_blobs += total - live[0]
        dead_bytes = row.size - pack_overhead(live[0]) - live[1]
        if live[0] == 0:
            dead_packs.append(row)
        elif dead_bytes > 0 and dead_bytes > store.min_dead_fraction * row.size:
            to_repack.append(row)
        else:
            stats.deleted_blobs -= total - live[0]  # dead rows stay until the pack is repacked

    for row in dead_packs:
        with db.tx() as conn:
            conn.execute("DELETE FROM chunks WHERE pack = ?", (row.name,))
            conn.execute("UPDATE packs SET state = 'deleting' WHERE name = ?", (row.name,))
        backend.delete(row.name)
        db.pack_forget(row.name)
        stats.packs_deleted += 1

    _repack(store, to_repack, stats)
    db.query("DELETE FROM temp.reach")
    stats.bytes_after = store.storage_bytes()
    return stats


def _mark(store: VaultStore, points: list) -> None:  # type: ignore[type-arg]
    db = store.db
    db.query("CREATE TEMP TABLE IF NOT EXISTS reach (id BLOB PRIMARY KEY) WITHOUT ROWID")
    db.query("DELETE FROM temp.reach")

    def first_visit(nid: bytes) -> bool:
        with db.tx() as conn:
            return conn.execute("INSERT OR IGNORE INTO temp.reach VALUES (?)", (nid,)).rowcount > 0

    for point in points:
        for disk in point.disks:
            for level, _start, _nid, node in merkle.iter_nodes(
                store._read_node,
                disk.root,
                merkle.block_count(disk.virtual_size),
                disk.fanout,
                descend=first_visit,
            ):
                if level == 0:
                    with db.tx() as conn:
                        conn.executemany(
                            "INSERT OR IGNORE INTO temp.reach VALUES (?)",
                            [(c,) for c in node.ids if c != ZERO_ID],
                        )
    with db.tx() as conn:
        conn.execute("INSERT OR IGNORE INTO temp.reach SELECT id FROM session_chunks")


def _repack(store: VaultStore, rows: list[PackRow], stats: GcStats) -> None:
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
        with db.tx() as conn:
            if new_name:
                db.pack_commit(conn, new_name, builder.entries, replace=True)
            for old in consumed:
                conn.execute("DELETE FROM chunks WHERE pack = ?", (old,))
                conn.execute("UPDATE packs SET state = 'deleting' WHERE name = ?", (old,))
        for old in consumed:
            backend.delete(old)
            db.pack_forget(old)
            stats.packs_deleted += 1
        stats.packs_written += 1 if new_name else 0
        builder, consumed = PackBuilder(), []

    for row in rows:
        live = db.query(
            "SELECT c.id, c.kind, c.offset, c.length, c.hash FROM chunks c "
            "JOIN temp.reach r ON r.id = c.id WHERE c.pack = ? ORDER BY c.offset",
            (row.name,),
        )
        data = backend.get(row.name)
        blobs = []
        for cid, kind, offset, length, digest in live:
            frame = data[offset : offset + length]
            if blob_hash(frame) != digest:
                break
            blobs.append((kind, cid, frame, digest))
        else:
            for kind, cid, frame, digest in blobs:
                builder.add(kind, cid, frame, digest)
            consumed.append(row.name)
            if builder.size >= store.pack_size:
                write()
            continue
        # Copying a damaged blob would hide the damage; leave the pack for verify to report.
        stats.damaged_packs.append(row.name)
    write()
