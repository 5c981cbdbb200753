"""Versioned schema migrations of the metadata store.

Each entry is applied once, in order, in its own transaction, and PRAGMA user_version (PostgreSQL:
the schema_version table) records how far a database has come. Never edit a released entry: append
a new one.

One schema for both engines: entries are SQLite's DDL, which ``metastore.postgres`` types for
PostgreSQL (INTEGER→BIGINT, REAL→DOUBLE PRECISION, BLOB→BYTEA). Where a statement has no portable
form, :func:`_with_postgresql` gives the entry a PostgreSQL twin; the SQLite text stays as released.
"""

from metastore.database import Migration


def _with_postgresql(script: str, *changes: tuple[str, str]) -> dict[str, str]:
    """``script`` for SQLite, and for PostgreSQL with each (old, new) text replaced."""
    pg = script
    for old, new in changes:
        assert old in pg, old
        pg = pg.replace(old, new)
    return {"sqlite": script, "postgresql": pg}


MIGRATIONS: list[Migration] = [
    # 1: foundation — vaults, registration keys, storage accounts, networks, servers.
    """
    CREATE TABLE operators (
        serial TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE TABLE vaults (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, region TEXT NOT NULL,
        created_at REAL NOT NULL, ca_cert_pem TEXT NOT NULL, ca_key_pem TEXT NOT NULL
    );
    CREATE TABLE vault_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        secret_hash TEXT NOT NULL UNIQUE, issued_at REAL NOT NULL, expires_at REAL NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('active', 'superseded'))
    );
    CREATE TABLE storage_accounts (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        name TEXT NOT NULL, region TEXT NOT NULL, redundancy TEXT NOT NULL,
        backend TEXT NOT NULL, location TEXT NOT NULL, connection TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL, PRIMARY KEY (vault_id, name)
    );
    CREATE TABLE networks (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        name TEXT NOT NULL, region TEXT NOT NULL, address_space TEXT NOT NULL,
        subnets TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (vault_id, name)
    );
    CREATE TABLE servers (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        role TEXT NOT NULL, name TEXT NOT NULL, serial TEXT NOT NULL UNIQUE,
        identity TEXT NOT NULL, version TEXT NOT NULL DEFAULT '',
        registered_at REAL NOT NULL, last_heartbeat REAL NOT NULL DEFAULT 0,
        provider TEXT NOT NULL DEFAULT '', encryption INTEGER NOT NULL DEFAULT 0,
        key_fingerprint TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (vault_id, role, name)
    );
    CREATE TABLE revoked (
        serial TEXT PRIMARY KEY, vault_id TEXT NOT NULL, identity TEXT NOT NULL,
        reason TEXT NOT NULL, revoked_at REAL NOT NULL
    )
    """,
    # 2: control plane — inventory, policies, protected items, commands, jobs. A VM's spec is
    # protobuf bytes, which SQLite keeps in a TEXT column and PostgreSQL only in BYTEA.
    _with_postgresql("""
    CREATE TABLE clouds (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        name TEXT NOT NULL, provider TEXT NOT NULL, synced_at REAL NOT NULL,
        PRIMARY KEY (vault_id, name)
    );
    CREATE TABLE hosts (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        name TEXT NOT NULL, cloud TEXT NOT NULL, provider TEXT NOT NULL,
        connected INTEGER NOT NULL, last_seen REAL NOT NULL,
        PRIMARY KEY (vault_id, name)
    );
    CREATE TABLE vms (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        vm_id TEXT NOT NULL, name TEXT NOT NULL, host TEXT NOT NULL, cloud TEXT NOT NULL,
        provider TEXT NOT NULL, spec TEXT NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (vault_id, vm_id)
    );
    CREATE INDEX vms_by_name ON vms(vault_id, name);
    CREATE TABLE policies (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        cloud TEXT NOT NULL, policy TEXT NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (vault_id, cloud)
    );
    CREATE TABLE protected_items (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        vm_id TEXT NOT NULL, name TEXT NOT NULL, cloud TEXT NOT NULL, provider TEXT NOT NULL,
        state TEXT NOT NULL, health TEXT NOT NULL DEFAULT 'Normal', health_errors TEXT NOT NULL DEFAULT '[]',
        policy TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
        active_location TEXT NOT NULL DEFAULT 'Primary',
        PRIMARY KEY (vault_id, vm_id)
    );
    CREATE TABLE commands (
        id TEXT PRIMARY KEY,
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        provider TEXT NOT NULL, body BLOB NOT NULL, created_at REAL NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
        delivered INTEGER NOT NULL DEFAULT 0, completed_at REAL NOT NULL DEFAULT 0,
        result TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX commands_pending ON commands(vault_id, provider, state);
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        kind TEXT NOT NULL, target TEXT NOT NULL, state TEXT NOT NULL,
        created_at REAL NOT NULL, started_at REAL NOT NULL DEFAULT 0, ended_at REAL NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT '', context TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE job_tasks (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
        started_at REAL NOT NULL DEFAULT 0, ended_at REAL NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT '', output TEXT NOT NULL DEFAULT '',
        command_id TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (job_id, seq)
    );
    CREATE INDEX tasks_by_command ON job_tasks(command_id)
    """, ("spec TEXT NOT NULL", "spec BLOB NOT NULL")),
    # 3: replication engine — per-VM replication status and recovery point facts.
    """
    CREATE TABLE replication_status (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        vm_id TEXT NOT NULL,
        last_point_id TEXT NOT NULL DEFAULT '', last_point_at REAL NOT NULL DEFAULT 0,
        last_commit_at REAL NOT NULL DEFAULT 0, initial_progress REAL NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (vault_id, vm_id)
    );
    CREATE TABLE recovery_points (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        vm_id TEXT NOT NULL, point_id TEXT NOT NULL, storage TEXT NOT NULL,
        created_at REAL NOT NULL, kind TEXT NOT NULL, uploaded_bytes INTEGER NOT NULL,
        changed_blocks INTEGER NOT NULL, committed_at REAL NOT NULL,
        PRIMARY KEY (vault_id, point_id)
    );
    CREATE INDEX recovery_points_by_vm ON recovery_points(vault_id, vm_id, created_at)
    """,
    # 4: failover — recovered VMs, recovery plans, failback sessions.
    """
    CREATE TABLE recovered_vms (
        id TEXT PRIMARY KEY,
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        name TEXT NOT NULL, source_vm_id TEXT NOT NULL, source_name TEXT NOT NULL,
        kind TEXT NOT NULL, state TEXT NOT NULL, point_id TEXT NOT NULL DEFAULT '',
        storage TEXT NOT NULL, size TEXT NOT NULL DEFAULT '', network TEXT NOT NULL DEFAULT '',
        subnet TEXT NOT NULL DEFAULT '', address TEXT NOT NULL DEFAULT '', disks TEXT NOT NULL DEFAULT '[]',
        dir TEXT NOT NULL DEFAULT '', job_id TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE INDEX recovered_by_source ON recovered_vms(vault_id, source_vm_id);
    CREATE UNIQUE INDEX recovered_address ON recovered_vms(vault_id, network, address) WHERE address != '';
    CREATE TABLE recovery_plans (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        name TEXT NOT NULL, groups TEXT NOT NULL DEFAULT '[]', created_at REAL NOT NULL,
        PRIMARY KEY (vault_id, name)
    );
    CREATE TABLE failback_sessions (
        id TEXT PRIMARY KEY,
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        vm_id TEXT NOT NULL, recovered_id TEXT NOT NULL, host TEXT NOT NULL, created_at REAL NOT NULL,
        blocks_compared INTEGER NOT NULL DEFAULT 0, blocks_sent INTEGER NOT NULL DEFAULT 0,
        bytes_sent INTEGER NOT NULL DEFAULT 0
    )
    """,
    # 5: one protection lifecycle — epochs and fencing, owned inventory, events, commit records.
    """
    ALTER TABLE protected_items ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE protected_items ADD COLUMN prev_state TEXT NOT NULL DEFAULT '';
    ALTER TABLE protected_items ADD COLUMN job_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE protected_items ADD COLUMN op TEXT NOT NULL DEFAULT '';
    ALTER TABLE protected_items ADD COLUMN switched_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE protected_items ADD COLUMN fenced_attempt_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE protected_items ADD COLUMN fenced_attempt_from TEXT NOT NULL DEFAULT '';
    ALTER TABLE protected_items ADD COLUMN source_missing TEXT NOT NULL DEFAULT '';
    ALTER TABLE vms ADD COLUMN missing_since REAL NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN missing_since REAL NOT NULL DEFAULT 0;
    ALTER TABLE clouds ADD COLUMN missing_since REAL NOT NULL DEFAULT 0;
    ALTER TABLE recovery_points ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE replication_status ADD COLUMN warning TEXT NOT NULL DEFAULT '';
    ALTER TABLE replication_status ADD COLUMN warning_code TEXT NOT NULL DEFAULT '';
    ALTER TABLE replication_status ADD COLUMN warning_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE commands ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE vaults ADD COLUMN state TEXT NOT NULL DEFAULT 'Active';
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        at REAL NOT NULL, severity TEXT NOT NULL CHECK (severity IN ('Info', 'Warning', 'Critical')),
        vm_id TEXT NOT NULL DEFAULT '', vm_name TEXT NOT NULL DEFAULT '', server TEXT NOT NULL DEFAULT '',
        code TEXT NOT NULL, message TEXT NOT NULL
    );
    CREATE INDEX events_by_vm ON events(vault_id, vm_id, at)
    """,
    # 6: two-phase registration keys — a generated key is 'pending' until the CLI
    # has written its file and activates it. SQLite cannot alter a CHECK constraint, so the
    # table is recreated with the same columns and rows (ids kept: they are the key ids).
    """
    CREATE TABLE vault_keys_v6 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        secret_hash TEXT NOT NULL UNIQUE, issued_at REAL NOT NULL, expires_at REAL NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'superseded'))
    );
    INSERT INTO vault_keys_v6(id, vault_id, secret_hash, issued_at, expires_at, state)
        SELECT id, vault_id, secret_hash, issued_at, expires_at, state FROM vault_keys;
    DROP TABLE vault_keys;
    ALTER TABLE vault_keys_v6 RENAME TO vault_keys
    """,
    # 7: what an operator watches (metrics) — per protected VM, counters of its cycles kept
    # with its replication status, so they survive restarts and read the same from any process.
    """
    ALTER TABLE replication_status ADD COLUMN shipped_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE replication_status ADD COLUMN cycles INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE replication_status ADD COLUMN resyncs INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE replication_status ADD COLUMN last_cycle_seconds REAL NOT NULL DEFAULT 0
    """,
    # 8: billing meters replication when it happens — bytes uploaded per VM per day (UTC) of
    # commit, written in the transaction that commits each point, and kept when the points
    # are pruned. Existing points are metered by the day they were committed.
    _with_postgresql("""
    CREATE TABLE replication_usage (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        vm_id TEXT NOT NULL, day TEXT NOT NULL,
        uploaded_bytes INTEGER NOT NULL DEFAULT 0, points INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (vault_id, vm_id, day)
    );
    INSERT INTO replication_usage(vault_id, vm_id, day, uploaded_bytes, points)
        SELECT vault_id, vm_id,
               strftime('%Y-%m-%d', CASE WHEN committed_at > 0 THEN committed_at ELSE created_at END, 'unixepoch'),
               sum(uploaded_bytes), count(*)
        FROM recovery_points GROUP BY 1, 2, 3
    """, ("strftime('%Y-%m-%d', CASE WHEN committed_at > 0 THEN committed_at ELSE created_at END, 'unixepoch')",
          "to_char(to_timestamp(CASE WHEN committed_at > 0 THEN committed_at ELSE created_at END) AT TIME ZONE 'UTC',"
          " 'YYYY-MM-DD')")),
    # 9: operations — the last replication health maintenance saw per item (events.py turns a
    # change into an event), events by time (--since, trimming), the bytes a job task moved.
    """
    CREATE TABLE health_seen (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        vm_id TEXT NOT NULL, health TEXT NOT NULL, changed_at REAL NOT NULL,
        PRIMARY KEY (vault_id, vm_id)
    );
    CREATE INDEX events_by_time ON events(vault_id, at);
    ALTER TABLE job_tasks ADD COLUMN bytes_done INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE job_tasks ADD COLUMN bytes_total INTEGER NOT NULL DEFAULT 0
    """,
    # 10: site to site (issue 11) — the VM networks of a cloud and the replica hosts among its
    # hosts (inventory), the recovery cloud, host and pairing of a protected item (lifecycle),
    # network mappings (sitetosite), and every pairing with what its recovery host reports:
    # the points it keeps and their health (replicas). Metadata only: no data of these VMs.
    """
    ALTER TABLE clouds ADD COLUMN networks TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE hosts ADD COLUMN replica_address TEXT NOT NULL DEFAULT '';
    ALTER TABLE hosts ADD COLUMN replica_free_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE protected_items ADD COLUMN recovery_cloud TEXT NOT NULL DEFAULT '';
    ALTER TABLE protected_items ADD COLUMN recovery_host TEXT NOT NULL DEFAULT '';
    ALTER TABLE protected_items ADD COLUMN pairing_id TEXT NOT NULL DEFAULT '';
    CREATE TABLE network_mappings (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        primary_cloud TEXT NOT NULL, primary_network TEXT NOT NULL,
        recovery_cloud TEXT NOT NULL, recovery_network TEXT NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (vault_id, primary_cloud, primary_network)
    );
    CREATE TABLE replica_points (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        vm_id TEXT NOT NULL, point_id TEXT NOT NULL, pairing_id TEXT NOT NULL, host TEXT NOT NULL,
        created_at REAL NOT NULL, app_consistent INTEGER NOT NULL, logical_bytes INTEGER NOT NULL,
        stored_bytes INTEGER NOT NULL, epoch INTEGER NOT NULL,
        PRIMARY KEY (vault_id, vm_id, point_id)
    );
    CREATE TABLE replica_status (
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        vm_id TEXT NOT NULL, pairing_id TEXT NOT NULL, host TEXT NOT NULL,
        health TEXT NOT NULL, message TEXT NOT NULL, free_bytes INTEGER NOT NULL,
        last_received_at REAL NOT NULL, reported_at REAL NOT NULL, released_at REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (vault_id, vm_id, pairing_id)
    )
    """,
    # 12: operators with roles (Reader, Operator, Contributor; init's credential stays Contributor),
    # their portal passwords (Argon2id hashes), portal sessions (hashes of the cookie tokens) and
    # failed sign-ins (the rate limit): in the database, so any cloud service process can serve them.
    """
    ALTER TABLE operators ADD COLUMN role TEXT NOT NULL DEFAULT 'Contributor';
    CREATE TABLE operator_accounts (
        name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE TABLE portal_sessions (
        token_hash TEXT PRIMARY KEY, name TEXT NOT NULL REFERENCES operator_accounts(name) ON DELETE CASCADE,
        csrf TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL
    );
    CREATE TABLE signin_failures (name TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX signin_failures_name ON signin_failures(name, at)
    """,
    # 13: re-protect (site to site): what the primary reports of its reverse syncs, per pairing
    """
    ALTER TABLE replica_status ADD COLUMN reverse_synced_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE replica_status ADD COLUMN reverse_blocks INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE replica_status ADD COLUMN reverse_error TEXT NOT NULL DEFAULT '';
    ALTER TABLE replica_status ADD COLUMN reverse_reported_at REAL NOT NULL DEFAULT 0
    """,
    # 14: several cloud service processes (issue 15): named leases for singleton background
    # work (``leases``), and the process that runs each job with its lease (``jobs``: owner,
    # lease_until; takeovers counts how often another process took a job over), and how many
    # times each task was started (a cloud step re-run after its process died counts twice).
    """
    CREATE TABLE leases (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL, acquired_at REAL NOT NULL
    );
    ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN takeovers INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE job_tasks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0
    """,
]
