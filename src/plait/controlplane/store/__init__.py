"""Versioned config storage: the `Store` interface and its embedded SQLite implementation."""

from plait.controlplane.store.base import Applied, ConflictError, NotFoundError, Record, Store
from plait.controlplane.store.sqlite import SqliteStore

__all__ = ["Applied", "ConflictError", "NotFoundError", "Record", "SqliteStore", "Store"]
