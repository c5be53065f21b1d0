"""Services and their instances, held in memory and kept alive by leases.

An instance is registered with a TTL and gets a lease id; every heartbeat on the lease
renews it for another TTL. A lease that is not renewed in time expires and its instance
disappears, as with etcd leases or Eureka renewals: a crashed process cannot leave a
stale endpoint behind. Registering an instance id again replaces the old lease, so a
restarted process does not show up twice. Watchers are called after every change.

With a `LeaseTable` the registry survives a restart of the control plane: registrations,
health changes and removals are written through to it (renewals are not: they only move
a deadline in memory), and a new registry restores every stored lease under its old id
with a fresh deadline of one full TTL. A live sidecar's next heartbeat then finds its
lease, and the instance of one that died meanwhile expires a TTL after the restart. A
failed write is reported on stderr and counted (`write_failures`), never refused: the
registry in memory stays the truth for the running mesh, and what a lost write can cost
after a restart is bounded (an instance re-registers at its next heartbeat; a stale one
expires within a TTL).

The clock is injectable (`now`), and `expire()` can be driven by hand, so lease rules are
tested without waiting. In the control plane, `run()` is the owned task that expires
leases every `check_interval` seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import sqlite3
import sys
import time
from dataclasses import dataclass
from typing import Callable

from plait.controlplane.lease_table import LeaseTable
from plait.controlplane.mesh import Instance
from plait.controlplane.store.base import NotFoundError

DEFAULT_TTL = 10.0


@dataclass(slots=True)
class Lease:
    lease_id: str
    instance: Instance
    ttl: float
    expires_at: float  # on the registry's clock


class Registry:
    def __init__(self, *, now: Callable[[], float] = time.monotonic,
                 check_interval: float = 0.5, table: LeaseTable | None = None) -> None:
        """With `table`, restore its leases (each expiring one TTL from now) and keep it
        up to date. Raises sqlite3.Error if the table cannot be read."""
        self._now = now
        self._check_interval = check_interval
        self._table = table
        self._leases: dict[str, Lease] = {}
        self._by_instance: dict[str, str] = {}  # instance id → lease id
        self._subscribers: list[Callable[[], None]] = []
        self.write_failures = 0
        if table is not None:
            for stored in table.load():
                lease = Lease(stored.lease_id, stored.instance, stored.ttl,
                              self._now() + stored.ttl)
                self._leases[lease.lease_id] = lease
                self._by_instance[lease.instance.instance_id] = lease.lease_id

    def register(self, instance: Instance, ttl: float = DEFAULT_TTL) -> Lease:
        """Add (or replace) an instance; returns its new lease. ValueError for ttl <= 0."""
        if not ttl > 0:
            raise ValueError("ttl must be a positive number of seconds")
        if not instance.instance_id:
            instance_id = f"{instance.service}-{instance.address}:{instance.port}"
            instance = dataclasses.replace(instance, instance_id=instance_id)
        old = self._by_instance.pop(instance.instance_id, None)
        if old is not None:
            self._leases.pop(old, None)
        lease = Lease(secrets.token_hex(8), instance, ttl, self._now() + ttl)
        self._leases[lease.lease_id] = lease
        self._by_instance[instance.instance_id] = lease.lease_id
        self._write(lambda t: t.put(lease.lease_id, lease.instance, lease.ttl))
        self._notify()
        return lease

    def heartbeat(self, lease_id: str, *, healthy: bool | None = None) -> Lease:
        """Renew a lease for another TTL; with `healthy`, also mark its instance healthy or
        not (a sidecar whose app keeps failing). NotFoundError if it expired or never
        existed. Watchers hear only of a health change, not of a renewal."""
        lease = self._leases.get(lease_id)
        if lease is None or lease.expires_at <= self._now():
            raise NotFoundError(f"lease {lease_id}")
        lease.expires_at = self._now() + lease.ttl
        if healthy is not None and healthy != lease.instance.healthy:
            lease.instance = dataclasses.replace(lease.instance, healthy=healthy)
            self._write(lambda t: t.put(lease.lease_id, lease.instance, lease.ttl))
            self._notify()
        return lease

    def lease(self, lease_id: str) -> Lease | None:
        """The live lease `lease_id`, or None (unknown or expired)."""
        lease = self._leases.get(lease_id)
        return lease if lease is not None and lease.expires_at > self._now() else None

    def deregister(self, lease_id: str) -> Instance:
        """Remove the lease's instance now. NotFoundError if there is no such lease."""
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            raise NotFoundError(f"lease {lease_id}")
        self._by_instance.pop(lease.instance.instance_id, None)
        self._write(lambda t: t.delete([lease_id]))
        self._notify()
        return lease.instance

    def expire(self) -> list[Instance]:
        """Drop every lease whose time is up; returns their instances."""
        now = self._now()
        gone = [lease for lease in self._leases.values() if lease.expires_at <= now]
        for lease in gone:
            del self._leases[lease.lease_id]
            self._by_instance.pop(lease.instance.instance_id, None)
        if gone:
            self._write(lambda t: t.delete(lease.lease_id for lease in gone))
            self._notify()
        return [lease.instance for lease in gone]

    def leases(self) -> list[Lease]:
        """Live leases, by service then instance id."""
        return sorted(self._leases.values(),
                      key=lambda l: (l.instance.service, l.instance.instance_id))  # fmt: skip

    def instances(self) -> dict[str, list[Instance]]:
        """Service name → its registered instances (live leases only)."""
        out: dict[str, list[Instance]] = {}
        for lease in self.leases():
            out.setdefault(lease.instance.service, []).append(lease.instance)
        return out

    def remaining(self, lease: Lease) -> float:
        return max(0.0, lease.expires_at - self._now())

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _write(self, change: Callable[[LeaseTable], None]) -> None:
        if self._table is None:
            return
        try:
            change(self._table)
        except sqlite3.Error as exc:
            self.write_failures += 1
            print(f"plait: registry change not saved (a restart may lose or keep it for a "
                  f"TTL): {exc}", file=sys.stderr)

    def _notify(self) -> None:
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception as exc:  # one broken watcher must not stop the registry
                print(f"plait: registry subscriber failed: {exc!r}", file=sys.stderr)

    async def run(self) -> None:
        """Expire leases until cancelled. Owned by the control plane's task group."""
        while True:
            await asyncio.sleep(self._check_interval)
            self.expire()
