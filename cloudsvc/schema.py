"""Versioned schema migrations of the metadata store.

Each entry is applied once, in order, in its own transaction, and PRAGMA user_version records
how far a database has come. Never edit a released entry: append a new one.
"""

MIGRATIONS: list[str] = [
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
]
