"""The embedded store: one SQLite file, `<data-dir>/plait.db`, with the current state in memory.

Nothing to install or run. Every version of every resource is a row; the newest row of a
resource is its current state (a row without content is a deletion). Reads come from the
memory map; writes go to SQLite in one transaction first and reach memory only after the
commit, so memory never shows what the disk does not hold. Calls run directly on the event
loop: config writes are rare and a local SQLite write takes about a millisecond.
An exclusive lock on `<data-dir>/plait.lock` keeps a second control plane off the same
files.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from plait.core.errors import ConfigError, PlaitError
from plait.controlplane.store.base import Applied, ConflictError, NotFoundError, Record, Store
from plait.model import Resource, ResourceKey, key_of, parse_resource, to_dict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    kind       TEXT    NOT NULL,
    namespace  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    revision   INTEGER NOT NULL UNIQUE,
    updated_at REAL    NOT NULL,
    doc        TEXT,                -- canonical JSON; NULL marks a deletion
    PRIMARY KEY (kind, namespace, name, version)
)
"""


class SqliteStore(Store):
    """Open with `SqliteStore.open(data_dir)`; close with `close()`."""

    def __init__(self, db: sqlite3.Connection, lock_fd: int, *, now: Callable[[], float]):
        self._db = db
        self._lock_fd = lock_fd
        self._now = now
        self._latest: dict[ResourceKey, Record] = {}  # newest record, deletions included
        self._revision = 0
        self._subscribers: list[Callable[[], None]] = []

    @classmethod
    def open(
        cls, data_dir: str | os.PathLike, *, now: Callable[[], float] = time.time
    ) -> SqliteStore:
        """Open (creating if needed) the store in `data_dir` and load the current state.

        Raises PlaitError if another process holds the data directory.
        """
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(path / "plait.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise PlaitError(f"data directory {str(path)!r} is in use by another control plane")
        db = sqlite3.connect(path / "plait.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_SCHEMA)
        store = cls(db, lock_fd, now=now)
        store._load()
        return store

    def _load(self) -> None:
        rows = self._db.execute(
            "SELECT kind, namespace, name, version, revision, updated_at, doc"
            " FROM versions ORDER BY revision"
        )
        for row in rows:
            record = self._record(row)
            self._latest[record.key] = record
            self._revision = record.revision

    def _record(self, row: tuple) -> Record:
        kind, namespace, name, version, revision, updated_at, doc = row
        key = ResourceKey(kind, namespace, name)
        resource = None
        if doc is not None:
            try:
                resource = parse_resource(json.loads(doc))
            except ConfigError as err:
                # Stored under older, looser rules: keep the history, serve nothing for it.
                print(f"plait: stored {key} v{version} no longer valid: {err}", file=sys.stderr)
        return Record(key, version, revision, updated_at, resource)

    # --- writes -----------------------------------------------------------------------

    def _insert(self, key: ResourceKey, resource: Resource | None) -> Record:
        previous = self._latest.get(key)
        version = (previous.version if previous else 0) + 1
        revision = self._revision + 1
        doc = None if resource is None else json.dumps(to_dict(resource), sort_keys=True)
        record = Record(key, version, revision, self._now(), resource)
        self._db.execute(
            "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*key, version, revision, record.updated_at, doc),
        )
        self._revision = revision
        return record

    def _write(self, changes: list[tuple[ResourceKey, Resource | None]]) -> list[Record]:
        """Insert rows for `changes` in one transaction, then publish them to memory."""
        revision_before = self._revision
        self._db.execute("BEGIN IMMEDIATE")
        try:
            records = [self._insert(key, resource) for key, resource in changes]
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            self._revision = revision_before
            raise
        for record in records:
            self._latest[record.key] = record
        if records:
            self._notify()
        return records

    async def put_many(self, resources: Iterable[Resource]) -> list[Applied]:
        resources = list(resources)
        pending: dict[ResourceKey, Resource] = {}
        for resource in resources:
            pending[key_of(resource)] = resource  # within one apply the last document wins
        changes = [
            (key, res) for key, res in pending.items() if not self._is_current(key, res)
        ]
        written = {r.key: r for r in self._write(changes)}
        out = []
        for resource in resources:
            key = key_of(resource)
            record = written.get(key)
            out.append(Applied(record, True) if record else Applied(self._latest[key], False))
        return out

    def _is_current(self, key: ResourceKey, resource: Resource) -> bool:
        latest = self._latest.get(key)
        return latest is not None and latest.resource == resource

    async def delete(self, key: ResourceKey) -> Record:
        self._live(key)
        return self._write([(key, None)])[0]

    async def rollback(self, key: ResourceKey, version: int) -> Applied:
        row = self._db.execute(
            "SELECT kind, namespace, name, version, revision, updated_at, doc FROM versions"
            " WHERE kind = ? AND namespace = ? AND name = ? AND version = ?",
            (*key, version),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{key} version {version}")
        old = self._record(row)
        if old.resource is None:
            raise ConflictError(f"{key} version {version} is a deletion; delete it instead")
        return (await self.put_many([old.resource]))[0]

    # --- reads ------------------------------------------------------------------------

    def _live(self, key: ResourceKey) -> Record:
        record = self._latest.get(key)
        if record is None or record.deleted:
            raise NotFoundError(str(key))
        return record

    async def get(self, key: ResourceKey) -> Record:
        return self._live(key)

    async def list(self, kind: str, namespace: str | None = None) -> list[Record]:
        return [r for r in self.current(kind) if namespace is None or r.key.namespace == namespace]

    def current(self, kind: str) -> list[Record]:
        live = [r for k, r in self._latest.items() if k.kind == kind and not r.deleted]
        return sorted(live, key=lambda r: (r.key.namespace, r.key.name))

    async def history(self, key: ResourceKey) -> list[Record]:
        rows = self._db.execute(
            "SELECT kind, namespace, name, version, revision, updated_at, doc FROM versions"
            " WHERE kind = ? AND namespace = ? AND name = ? ORDER BY version",
            tuple(key),
        ).fetchall()
        if not rows:
            raise NotFoundError(str(key))
        return [self._record(row) for row in rows]

    @property
    def revision(self) -> int:
        return self._revision

    # --- watchers ---------------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _notify(self) -> None:
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception as exc:  # one broken watcher must not fail the write
                print(f"plait: store subscriber failed: {exc!r}", file=sys.stderr)

    def close(self) -> None:
        self._db.close()
        os.close(self._lock_fd)
