"""An in-memory `MeshView` that tests (and benchmarks) mutate directly.

It speaks the same protocol as the control plane's real view: resources are validated
`plait.model` objects (dicts and YAML are parsed on the way in, so a test cannot feed
the push side something the API would refuse), and every mutation calls the subscribers
synchronously — on the caller's thread, which in tests is the event loop's.
"""

from __future__ import annotations

from typing import Callable, Iterable

from plait.controlplane.mesh import Instance
from plait.dataplane.compile import compile_snapshot
from plait.model import Resource, key_of, parse_documents, parse_resource
from plait.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE


class FakeMeshView:
    def __init__(self) -> None:
        self._resources: dict[str, dict[tuple[str, str], Resource]] = {}
        self._instances: dict[str, dict[str, Instance]] = {}
        self._subscribers: list[Callable[[], None]] = []
        self.changes = 0

    # --- MeshView -----------------------------------------------------------------
    def resources(self, kind: str) -> list:
        return [self._resources.get(kind, {})[k] for k in sorted(self._resources.get(kind, {}))]

    def instances(self) -> dict[str, list[Instance]]:
        return {service: list(found.values()) for service, found in self._instances.items()
                if found}

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # --- mutations ----------------------------------------------------------------
    def apply(self, *documents: dict | Resource) -> None:
        """Create or replace resources (dicts are validated as the API would)."""
        for document in documents:
            resource = parse_resource(document) if isinstance(document, dict) else document
            key = key_of(resource)
            self._resources.setdefault(key.kind, {})[(key.namespace, key.name)] = resource
        self._changed()

    def apply_yaml(self, text: str) -> None:
        self.apply(*parse_documents(text))

    def delete(self, kind: str, name: str, namespace: str = "default") -> None:
        self._resources.get(kind, {}).pop((namespace, name), None)
        self._changed()

    def register(self, service: str, address: str, port: int, *, protocol: str = "http",
                 healthy: bool = True, spiffe_id: str = "", **labels: str) -> Instance:
        """Add (or replace) one instance of `service`; labels as keyword arguments;
        `spiffe_id`: the identity that registered it (as the registry records it)."""
        instance = Instance(service=service, address=address, port=port, protocol=protocol,
                            labels=labels, instance_id=f"{service}-{address}:{port}",
                            healthy=healthy, spiffe_id=spiffe_id)
        self._instances.setdefault(service, {})[instance.instance_id] = instance
        self._changed()
        return instance

    def deregister(self, service: str, address: str, port: int) -> None:
        self._instances.get(service, {}).pop(f"{service}-{address}:{port}", None)
        self._changed()

    def set_instances(self, service: str, instances: Iterable[Instance]) -> None:
        self._instances[service] = {i.instance_id or f"{i.service}-{i.address}:{i.port}": i
                                    for i in instances}
        self._changed()

    def _changed(self) -> None:
        self.changes += 1
        for callback in list(self._subscribers):
            callback()


def compiled_snapshot(translation: dict):
    """A translation (the push side's `translate` output) compiled as a sidecar compiles
    what it is pushed; raises ConfigError where the sidecar would refuse it."""
    return compile_snapshot(version="t", listeners=translation[LISTENER].values(),
                            clusters=translation[CLUSTER].values(),
                            routes=translation[ROUTE].values(),
                            endpoints=translation[ENDPOINT].values())
