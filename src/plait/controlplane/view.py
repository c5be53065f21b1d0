"""`MeshState`: the config store and the registry seen as one `MeshView` for the push side.

The push side reads current resources and instances synchronously from memory and learns
of changes through one subscription, whichever source changed.
"""

from __future__ import annotations

from typing import Callable

from plait.controlplane.mesh import Instance, MeshView
from plait.controlplane.registry import Registry
from plait.controlplane.store.base import Store
from plait.model import KINDS, Resource


class MeshState(MeshView):
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self._changes = 0
        # Subscribed first, so the count is already bumped when other watchers run.
        self.subscribe(self._count)

    def _count(self) -> None:
        self._changes += 1

    @property
    def revision(self) -> int:
        """Grows with every config or registry change (not part of `MeshView`; a handy
        version label for snapshots). Starts at the store's revision."""
        return self.store.revision + self._changes

    def resources(self, kind: str) -> list[Resource]:
        """Current validated resources of `kind`, by namespace then name; [] for an
        unknown kind."""
        if kind not in KINDS:
            return []
        return [record.resource for record in self.store.current(kind)]

    def instances(self) -> dict[str, list[Instance]]:
        return self.registry.instances()

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        unsubscribes = [self.store.subscribe(callback), self.registry.subscribe(callback)]

        def unsubscribe() -> None:
            for undo in unsubscribes:
                undo()

        return unsubscribe
