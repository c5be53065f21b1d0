"""Registered instances and their leases on disk, so a restarted control plane does not
serve an empty registry.

Why: the registry lives in memory. After a restart, callers that reconnect at once would
otherwise see every service vanish until each sidecar's next heartbeat (up to a third of
its TTL later) and answer 404 meanwhile. With the leases on disk the registry starts as
it stopped: every instance is back with its lease id, so a live sidecar's next heartbeat
finds its lease, and a dead one's instance expires one TTL after the restart.

How: one table, `leases`, in the control plane's SQLite file (`<data-dir>/plait.db`), on
a connection of its own beside the config store's (as the security tables do). A row is
written when an instance registers, changes health or leaves (deregistration, expiry),
never for a renewal: heartbeats only move the deadline in memory, and deadlines are not
stored, since a restored lease gets a fresh full TTL. Rows that no longer read as an
instance are dropped with a warning rather than stopping the control plane.

An instance keeps the SPIFFE ID of the workload that registered it (`spiffeId`, "" for
none), which callers' sidecars then require of it. A row written before that field
existed has none; if it also carries the `security.plait.io/tls` label, which used to be
enough for mTLS without checking whom, it is dropped: the sidecar's next heartbeat gets
404 and it registers again, this time with its identity recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from plait.controlplane.mesh import Instance
from plait.security.labels import TLS_LABEL
from plait.security.spiffe import SpiffeId

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    lease_id    TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL UNIQUE,
    ttl         REAL NOT NULL,       -- seconds
    instance    TEXT NOT NULL        -- JSON: every field of the instance but its id
)
"""


@dataclass(frozen=True, slots=True)
class StoredLease:
    lease_id: str
    instance: Instance
    ttl: float


def _instance_doc(instance: Instance) -> str:
    return json.dumps({"service": instance.service, "address": instance.address,
                       "port": instance.port, "protocol": instance.protocol,
                       "labels": instance.labels, "healthy": instance.healthy,
                       "spiffeId": instance.spiffe_id}, sort_keys=True)  # fmt: skip


def _instance(instance_id: str, doc: str) -> Instance:
    """Raises ValueError (or TypeError, KeyError) for a row that is not an instance."""
    d = json.loads(doc)
    labels = d.get("labels", {})
    if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValueError("labels are not a map of strings")
    if "spiffeId" not in d and labels.get(TLS_LABEL) == "true":
        raise ValueError("registered before identities were recorded; it registers again at "
                         "its next heartbeat")  # fmt: skip
    spiffe_id = d.get("spiffeId", "")
    if not isinstance(spiffe_id, str):
        raise ValueError("spiffeId is not a string")
    if spiffe_id:
        SpiffeId.parse(spiffe_id)  # ValueError for anything but a SPIFFE ID
    instance = Instance(service=d["service"], address=d["address"], port=d["port"],
                        protocol=d.get("protocol", "http"), labels=labels,
                        instance_id=instance_id, healthy=d.get("healthy", True),
                        spiffe_id=spiffe_id)  # fmt: skip
    if not (isinstance(instance.service, str) and isinstance(instance.address, str)
            and type(instance.port) is int and isinstance(instance.protocol, str)
            and isinstance(instance.healthy, bool)):
        raise ValueError("a field has the wrong type")
    return instance


class LeaseTable:
    """Open with `LeaseTable.open(data_dir)`; `close()` after. Every method raises
    sqlite3.Error when the file cannot be read or written (the registry reports a failed
    write and carries on: see `Registry`)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    @classmethod
    def open(cls, data_dir: str | os.PathLike) -> LeaseTable:
        """Open (creating the table if needed) the lease table of `data_dir`."""
        db = sqlite3.connect(Path(data_dir) / "plait.db", isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return cls(db)

    def load(self) -> list[StoredLease]:
        """Every stored lease, by instance id. Rows that do not read as an instance are
        deleted, with a warning on stderr."""
        out, bad = [], []
        rows = self._db.execute(
            "SELECT lease_id, instance_id, ttl, instance FROM leases ORDER BY instance_id")
        for lease_id, instance_id, ttl, doc in rows.fetchall():
            try:
                instance = _instance(instance_id, doc)
                if not (isinstance(ttl, (int, float)) and ttl > 0):
                    raise ValueError(f"ttl {ttl!r}")
            except (ValueError, TypeError, KeyError) as exc:
                print(f"plait: stored lease {lease_id} of {instance_id} dropped: {exc}",
                      file=sys.stderr)
                bad.append(lease_id)
                continue
            out.append(StoredLease(lease_id, instance, float(ttl)))
        if bad:
            self.delete(bad)
        return out

    def put(self, lease_id: str, instance: Instance, ttl: float) -> None:
        """Store a lease, replacing any lease of the same instance id (a re-registration)."""
        with self._transaction():
            self._db.execute("DELETE FROM leases WHERE instance_id = ? OR lease_id = ?",
                             (instance.instance_id, lease_id))
            self._db.execute("INSERT INTO leases VALUES (?, ?, ?, ?)",
                             (lease_id, instance.instance_id, ttl, _instance_doc(instance)))

    def delete(self, lease_ids: Iterable[str]) -> None:
        """Forget leases (deregistered or expired); unknown ids are ignored."""
        ids = [(lease_id,) for lease_id in lease_ids]
        if ids:
            with self._transaction():
                self._db.executemany("DELETE FROM leases WHERE lease_id = ?", ids)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

