"""Edges of the REST API that are awkward to reach through the CLI. The app is the real
one, driven in-process; the end-to-end paths are in tests/integration."""

import asyncio

import httpx
import pytest

from plait.controlplane.api import create_app
from plait.controlplane.api.resources import MAX_APPLY_BYTES
from plait.controlplane.registry import Registry
from plait.controlplane.store import SqliteStore


@pytest.fixture
def call(tmp_path):
    store = SqliteStore.open(tmp_path)
    app = create_app(store=store, registry=Registry(), proxy_status=lambda: [{"node_id": "n1"}])

    def call(method, path, **kwargs):
        async def go():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(go())

    yield call
    store.close()


def test_oversized_apply_is_refused(call):
    r = call("POST", "/api/v1/apply", content=b"#" * (MAX_APPLY_BYTES + 1))
    assert r.status_code == 400
    assert r.json()["error"]["reason"] == f"body larger than {MAX_APPLY_BYTES} bytes"


def test_non_utf8_apply_is_refused(call):
    r = call("POST", "/api/v1/apply", content=b"\xff\xfe")
    assert r.status_code == 400 and r.json()["error"]["reason"] == "body is not UTF-8 text"


def test_unknown_route_has_the_error_shape(call):
    r = call("GET", "/api/v1/nothing")
    assert r.status_code == 404 and r.json() == {"error": {"path": "", "reason": "Not Found"}}


def test_unknown_registration_field(call):
    r = call("POST", "/api/v1/registry/instances",
             json={"service": "a", "address": "127.0.0.1", "port": 80, "zone": "x"})
    assert r.status_code == 400 and r.json()["error"] == {"path": "zone", "reason": "unknown field"}


def test_proxy_status_comes_from_the_source(call):
    assert call("GET", "/api/v1/proxies").json() == {"proxies": [{"node_id": "n1"}]}
