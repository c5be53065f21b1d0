"""The audit log: who changed what, when, and for a resource, exactly how.

Every request that changes something is written as a row after its response: the actor
(a token id or a SPIFFE ID, never a secret), method, path, status and, for config
resources, the resource key and a unified diff of its YAML (before → after). Writes reach
the diff through `AuditedStore`, a `Store` that notes each changed resource in the
request's `AuditContext` (a context variable the auth middleware sets), so the config
routes need no audit code of their own.

The table keeps the newest `MAX_ROWS` rows; older ones are pruned as new ones arrive.
"""

from __future__ import annotations

import contextvars
import difflib
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import yaml

from plait.controlplane.auth.principal import Principal
from plait.controlplane.store.base import Applied, NotFoundError, Record, Store
from plait.model import Resource, ResourceKey, key_of, to_dict

MAX_ROWS = 100_000
_PRUNE_EVERY = 1_000


@dataclass(slots=True)
class Change:
    resource: str  # "VirtualService default/reviews", "token 0a1b...", a SPIFFE ID, ...
    diff: str = ""


@dataclass(slots=True)
class AuditContext:
    principal: Principal
    changes: list[Change] = field(default_factory=list)


current: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "plait_audit", default=None)


def note(resource: str, diff: str = "") -> None:
    """Record that the current request changed `resource` (no-op outside a request)."""
    ctx = current.get()
    if ctx is not None:
        ctx.changes.append(Change(resource, diff))


def _yaml(resource: Resource | None) -> list[str]:
    if resource is None:
        return []
    return yaml.safe_dump(to_dict(resource), sort_keys=False).splitlines(keepends=True)


def resource_diff(key: ResourceKey, before: Record | None, after: Record) -> str:
    """Unified diff of the resource's YAML from `before` (None: absent) to `after`."""
    old = f"{key.kind}/{key.namespace}/{key.name}@v{before.version}" if before else "/dev/null"
    new = f"{key.kind}/{key.namespace}/{key.name}@v{after.version}"
    lines = difflib.unified_diff(_yaml(before.resource if before else None),
                                 _yaml(after.resource), fromfile=old, tofile=new)  # fmt: skip
    return "".join(lines)


class AuditLog:
    def __init__(self, db: sqlite3.Connection, *, now: Callable[[], float] = time.time) -> None:
        self._db = db
        self._now = now
        self._since_prune = 0

    def record(self, ctx: AuditContext, *, method: str, path: str, status: int) -> None:
        """One row per noted change, or one row without a resource if none was noted."""
        changes = ctx.changes or [Change("")]
        at = self._now()
        p = ctx.principal
        self._db.executemany(
            "INSERT INTO audit (at, actor, actor_kind, method, path, status, resource, diff)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(at, p.actor, p.kind.value, method, path, status, c.resource, c.diff)
             for c in changes])  # fmt: skip
        self._since_prune += len(changes)
        if self._since_prune >= _PRUNE_EVERY:
            self._since_prune = 0
            self._db.execute("DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?",
                             (MAX_ROWS,))  # fmt: skip

    def entries(self, *, after: int = 0, limit: int = 100) -> list[dict]:
        """Rows with seq > `after`, oldest first, at most `limit`."""
        rows = self._db.execute(
            "SELECT seq, at, actor, actor_kind, method, path, status, resource, diff FROM audit"
            " WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()
        keys = ("seq", "at", "actor", "actorKind", "method", "path", "status", "resource", "diff")
        return [dict(zip(keys, row)) for row in rows]


class AuditedStore(Store):
    """A `Store` that notes every changed resource, with its diff, in the audit context."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner

    async def _before(self, key: ResourceKey) -> Record | None:
        try:
            return await self._inner.get(key)
        except NotFoundError:
            return None

    async def put_many(self, resources: Iterable[Resource]) -> list[Applied]:
        resources = list(resources)
        before = {key_of(r): await self._before(key_of(r)) for r in resources}
        applied = await self._inner.put_many(resources)
        seen = set()
        for item in applied:
            key = item.record.key
            if item.changed and key not in seen:
                seen.add(key)
                note(str(key), resource_diff(key, before[key], item.record))
        return applied

    async def delete(self, key: ResourceKey) -> Record:
        before = await self._before(key)
        record = await self._inner.delete(key)
        note(str(key), resource_diff(key, before, record))
        return record

    async def rollback(self, key: ResourceKey, version: int) -> Applied:
        before = await self._before(key)
        applied = await self._inner.rollback(key, version)
        if applied.changed:
            note(str(key), resource_diff(key, before, applied.record))
        return applied

    async def get(self, key: ResourceKey) -> Record:
        return await self._inner.get(key)

    async def list(self, kind: str, namespace: str | None = None) -> list[Record]:
        return await self._inner.list(kind, namespace)

    async def history(self, key: ResourceKey) -> list[Record]:
        return await self._inner.history(key)

    def current(self, kind: str) -> list[Record]:
        return self._inner.current(kind)

    @property
    def revision(self) -> int:
        return self._inner.revision

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        return self._inner.subscribe(callback)

    def close(self) -> None:
        self._inner.close()
