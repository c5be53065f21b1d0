import asyncio

from plait.controlplane.mesh import Instance, MeshView
from plait.controlplane.registry import Registry
from plait.controlplane.store import SqliteStore
from plait.controlplane.view import MeshState
from plait.model import VirtualService, parse_resource

VS = {
    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
    "metadata": {"name": "reviews"},
    "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
}


def test_view_reads_store_and_registry_and_notifies(tmp_path):
    store = SqliteStore.open(tmp_path)
    try:
        registry = Registry()
        view: MeshView = MeshState(store, registry)
        seen = []
        unsubscribe = view.subscribe(lambda: seen.append(view.revision))
        asyncio.run(store.put(parse_resource(VS)))
        registry.register(Instance("reviews", "127.0.0.1", 9080), ttl=5)
        [vs] = view.resources("VirtualService")
        assert isinstance(vs, VirtualService) and vs.metadata.name == "reviews"
        assert view.resources("DestinationRule") == [] and view.resources("Nonsense") == []
        assert [i.port for i in view.instances()["reviews"]] == [9080]
        assert len(seen) == 2 and seen[0] < seen[1]
        unsubscribe()
        registry.register(Instance("ratings", "127.0.0.1", 9081), ttl=5)
        assert len(seen) == 2
    finally:
        store.close()
