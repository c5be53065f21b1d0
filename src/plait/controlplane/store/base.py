"""The config store's one interface, so the embedded store and an etcd store are
interchangeable without touching the API, the view or the CLI.

Every write gives the resource a new version (1, 2, 3, ... per resource, never reused, not
even after a delete) and the store a new global revision. History keeps every version with
its time and full content; a rollback writes an old content again as a new version.
Reads of the current state are served from memory and are synchronous, because the push
side reads them on every translation.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Iterable

from plait.core.errors import PlaitError
from plait.model import Resource, ResourceKey


class NotFoundError(PlaitError):
    """The named resource, version or lease does not exist (HTTP 404)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class ConflictError(PlaitError):
    """The request contradicts the current state (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One version of one resource. `resource` is None for the version that deleted it."""

    key: ResourceKey
    version: int
    revision: int
    updated_at: float  # Unix time, seconds
    resource: Resource | None

    @property
    def deleted(self) -> bool:
        return self.resource is None


@dataclass(frozen=True, slots=True)
class Applied:
    record: Record
    changed: bool  # False: the content was already current; no new version was written


class Store(abc.ABC):
    """Versioned resources with history. Writes are validated before they reach a store:
    a store accepts only `plait.model` objects."""

    @abc.abstractmethod
    async def put_many(self, resources: Iterable[Resource]) -> list[Applied]:
        """Write all resources atomically: all get new versions, or none do (an exception)."""

    async def put(self, resource: Resource) -> Applied:
        return (await self.put_many([resource]))[0]

    @abc.abstractmethod
    async def get(self, key: ResourceKey) -> Record:
        """The current version; NotFoundError if absent or deleted."""

    @abc.abstractmethod
    async def list(self, kind: str, namespace: str | None = None) -> list[Record]:
        """Current versions of a kind, sorted by namespace and name."""

    @abc.abstractmethod
    async def delete(self, key: ResourceKey) -> Record:
        """Delete; returns the deletion record (a new version). NotFoundError if absent."""

    @abc.abstractmethod
    async def history(self, key: ResourceKey) -> list[Record]:
        """Every version, oldest first, deletions included. NotFoundError if never written."""

    @abc.abstractmethod
    async def rollback(self, key: ResourceKey, version: int) -> Applied:
        """Make the content of `version` current again, as a new version.

        NotFoundError if there is no such version; ConflictError if that version is a
        deletion (delete the resource instead).
        """

    @abc.abstractmethod
    def current(self, kind: str) -> list[Record]:
        """Current versions of a kind from memory, synchronously (for the mesh view)."""

    @property
    @abc.abstractmethod
    def revision(self) -> int:
        """The global revision: bumped by every write."""

    @abc.abstractmethod
    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` after every write that changed something; returns unsubscribe."""

    @abc.abstractmethod
    def close(self) -> None: ...
