"""The provider's own state (STATE_DIR/provider.db, SQLite WAL).

- ``hosts``: the last inventory each agent reported, so a restarted provider syncs at once.
- ``agent_commands``: host commands relayed from the cloud, waiting for their agent.
- ``done_commands``: completed command ids with their result. A command the cloud sends
  again (it was not acknowledged before a crash) is answered from here, not executed
  again: at-least-once delivery, exactly-once effect. ``reported`` says whether the cloud
  has the result yet.
"""

from __future__ import annotations

import os

from asrpb import control_pb2, hostlink_pb2
from metastore.database import Database

MIGRATIONS = [
    """
    CREATE TABLE hosts (
        name TEXT PRIMARY KEY, inventory BLOB NOT NULL, last_seen REAL NOT NULL
    );
    CREATE TABLE agent_commands (
        id TEXT PRIMARY KEY, host TEXT NOT NULL, body BLOB NOT NULL, received_at REAL NOT NULL
    );
    CREATE TABLE done_commands (
        id TEXT PRIMARY KEY, result BLOB NOT NULL, completed_at REAL NOT NULL,
        reported INTEGER NOT NULL DEFAULT 0
    )
    """,
]


class ProviderStore:
    def __init__(self, state_dir: str) -> None:
        self.db = Database(os.path.join(state_dir, "provider.db"), MIGRATIONS)

    def save_inventory(self, host: str, inv: hostlink_pb2.HostInventory, now: float) -> bool:
        """Store a host's inventory; True when it differs from what was stored."""
        body = inv.SerializeToString(deterministic=True)
        old = self.db.one("SELECT inventory FROM hosts WHERE name=?", (host,))
        with self.db.write() as conn:
            conn.execute("INSERT OR REPLACE INTO hosts(name, inventory, last_seen) VALUES (?,?,?)", (host, body, now))
        return old is None or bytes(old["inventory"]) != body

    def inventory(self, host: str) -> tuple[hostlink_pb2.HostInventory, float] | None:
        row = self.db.one("SELECT inventory, last_seen FROM hosts WHERE name=?", (host,))
        if row is None:
            return None
        inv = hostlink_pb2.HostInventory()
        inv.ParseFromString(row["inventory"])
        return inv, float(row["last_seen"])

    def done(self, command_id: str) -> control_pb2.CommandResult | None:
        row = self.db.one("SELECT result FROM done_commands WHERE id=?", (command_id,))
        if row is None:
            return None
        res = control_pb2.CommandResult()
        res.ParseFromString(row["result"])
        return res

    def queue_for_agent(self, host: str, cmd: control_pb2.Command, now: float) -> None:
        with self.db.write() as conn:
            conn.execute("INSERT OR IGNORE INTO agent_commands(id, host, body, received_at) VALUES (?,?,?,?)",
                         (cmd.id, host, cmd.SerializeToString(), now))

    def agent_queue(self, host: str) -> list[control_pb2.Command]:
        out = []
        for r in self.db.query("SELECT body FROM agent_commands WHERE host=? ORDER BY received_at, id", (host,)):
            c = control_pb2.Command()
            c.ParseFromString(r["body"])
            out.append(c)
        return out

    def complete(self, result: control_pb2.CommandResult, now: float) -> None:
        """Record a result, and drop the command from any agent queue, in one transaction."""
        with self.db.write() as conn:
            conn.execute("INSERT OR IGNORE INTO done_commands(id, result, completed_at) VALUES (?,?,?)",
                         (result.id, result.SerializeToString(), now))
            conn.execute("DELETE FROM agent_commands WHERE id=?", (result.id,))

    def mark_reported(self, command_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("UPDATE done_commands SET reported=1 WHERE id=?", (command_id,))

    def unreported(self) -> list[control_pb2.CommandResult]:
        out = []
        for r in self.db.query("SELECT result FROM done_commands WHERE reported=0 ORDER BY completed_at"):
            res = control_pb2.CommandResult()
            res.ParseFromString(r["result"])
            out.append(res)
        return out
