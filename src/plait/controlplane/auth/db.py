"""The security tables, in the control plane's SQLite file (`<data-dir>/plait.db`).

A connection of its own beside the config store's (the file is in WAL mode, and both
connections live on the one event loop, so writes never contend). Tables:

- `tokens`: operator and join tokens, by id, with the SHA-256 of the secret only;
- `audit`: one row per change made through the API;
- `workload_services`: for each workload identity, the services it may register
  (recorded when a join token bootstraps it, so they survive into mTLS renewals).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS tokens (
        id          TEXT PRIMARY KEY,
        hash        TEXT NOT NULL,        -- hex SHA-256 of the secret part
        kind        TEXT NOT NULL,        -- operator | join
        role        TEXT,                 -- operator tokens: viewer | editor | admin
        namespace   TEXT,                 -- join tokens: the identity they grant
        account     TEXT,
        services    TEXT,                 -- join tokens: JSON list, [] = the account name
        description TEXT NOT NULL DEFAULT '',
        created_at  REAL NOT NULL,
        created_by  TEXT NOT NULL,
        expires_at  REAL,                 -- NULL: never
        revoked_at  REAL
    )""",
    """CREATE TABLE IF NOT EXISTS audit (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        at         REAL NOT NULL,
        actor      TEXT NOT NULL,         -- token id, SPIFFE ID, or 'anonymous'
        actor_kind TEXT NOT NULL,         -- operator | join | workload | anonymous
        method     TEXT NOT NULL,
        path       TEXT NOT NULL,
        status     INTEGER NOT NULL,
        resource   TEXT NOT NULL DEFAULT '',
        diff       TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE IF NOT EXISTS workload_services (
        spiffe_id  TEXT PRIMARY KEY,
        services   TEXT NOT NULL,         -- JSON list
        token_id   TEXT NOT NULL,
        updated_at REAL NOT NULL
    )""",
]


def open_db(data_dir: str | Path) -> sqlite3.Connection:
    """Open (creating the tables if needed) the security tables of `data_dir`."""
    db = sqlite3.connect(Path(data_dir) / "plait.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")
    for statement in _SCHEMA:
        db.execute(statement)
    return db
