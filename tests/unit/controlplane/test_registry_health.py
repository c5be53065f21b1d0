"""A heartbeat may carry the instance's health: a sidecar whose app keeps failing marks
its instance unhealthy (and the push side then leaves it out of callers' endpoints)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from plait.controlplane.api import create_app
from plait.controlplane.mesh import Instance
from plait.controlplane.registry import Registry
from plait.controlplane.store import NotFoundError, SqliteStore
from plait.testing.clock import FakeClock


def test_heartbeat_with_health_changes_it_and_tells_watchers_once():
    clock = FakeClock()
    registry = Registry(now=clock)
    lease = registry.register(Instance("reviews", "127.0.0.1", 9080), ttl=5)
    calls = []
    registry.subscribe(lambda: calls.append(1))
    registry.heartbeat(lease.lease_id, healthy=False)
    registry.heartbeat(lease.lease_id, healthy=False)
    assert [i.healthy for i in registry.instances()["reviews"]] == [False]
    assert len(calls) == 1
    registry.heartbeat(lease.lease_id)  # no opinion: unchanged
    assert registry.instances()["reviews"][0].healthy is False
    registry.heartbeat(lease.lease_id, healthy=True)
    assert registry.instances()["reviews"][0].healthy is True
    assert len(calls) == 2
    clock.advance(5)
    with pytest.raises(NotFoundError):
        registry.heartbeat(lease.lease_id, healthy=False)


@pytest.fixture
def call(tmp_path):
    store = SqliteStore.open(tmp_path)
    app = create_app(store=store, registry=Registry())

    def call(method, path, **kwargs):
        async def go():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(go())

    yield call
    store.close()


def test_put_on_a_lease_with_a_health_body(call):
    r = call("POST", "/api/v1/registry/instances",
             json={"service": "reviews", "address": "127.0.0.1", "port": 9080})
    lease = r.json()["leaseId"]
    assert call("PUT", f"/api/v1/registry/leases/{lease}").json()["healthy"] is True
    r = call("PUT", f"/api/v1/registry/leases/{lease}", json={"healthy": False})
    assert r.status_code == 200 and r.json()["healthy"] is False
    services = call("GET", "/api/v1/registry/services").json()["services"]
    assert services[0]["healthy"] == 0 and services[0]["total"] == 1
    r = call("PUT", f"/api/v1/registry/leases/{lease}", json={"healthy": "maybe"})
    assert r.status_code == 400
    r = call("PUT", f"/api/v1/registry/leases/{lease}", json={"healthy": True, "x": 1})
    assert r.status_code == 400
    assert call("PUT", "/api/v1/registry/leases/nope", json={"healthy": True}).status_code == 404
