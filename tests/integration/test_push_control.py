"""The push side inside a real `plait control`: writes through the REST API reach a
connected proxy, and the API reports that proxy's ACK state."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest

from plait.testing.ads_client import AdsClient, make_node
from plait.testing.control import start_control
from plait.xds.resources import CLUSTER, ENDPOINT, ROUTE

ROUTE_RULE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog}
spec:
  hosts: [catalog]
  http:
  - timeout: 3s
    route: [{destination: {host: catalog}}]
"""


@pytest.fixture
def control(tmp_path):
    with start_control(tmp_path / "data") as cp:
        yield cp


def test_api_writes_are_pushed_and_proxy_status_is_served(control):
    assert control.xds_address != "off"

    async def scenario():
        async with httpx.AsyncClient(base_url=control.api_url, timeout=10) as api, \
                grpc.aio.insecure_channel(control.xds_address) as channel:
            proxy = AdsClient(channel, make_node("web-1", app="web", dependencies=["catalog"]))
            clusters = await proxy.subscribe(CLUSTER)
            assert not clusters.resources  # nothing registered yet
            await proxy.ack(clusters)
            registered = await api.post("/api/v1/registry/instances", json={
                "service": "catalog", "address": "127.0.0.1", "port": 8081,
                "labels": {"version": "v1"}})
            assert registered.status_code == 201
            clusters = await proxy.recv()  # the registration, pushed
            assert clusters.type_url == CLUSTER and clusters.resources
            await proxy.ack(clusters)
            endpoints = await proxy.subscribe(ENDPOINT, ["outbound|8081||catalog"])
            await proxy.ack(endpoints)
            routes = await proxy.subscribe(ROUTE, ["outbound"])
            await proxy.ack(routes)

            applied = await api.post("/api/v1/apply", content=ROUTE_RULE)
            assert applied.status_code == 200, applied.text
            pushed = await proxy.recv()
            assert pushed.type_url == ROUTE and pushed.version_info != routes.version_info
            await proxy.ack(pushed)

            async with asyncio.timeout(10):
                while True:
                    listed = (await api.get("/api/v1/proxies")).json()["proxies"]
                    rows = [p for p in listed if p["node_id"] == "web-1"]
                    if rows and rows[0]["types"]["routes"]["version_acked"] == \
                            pushed.version_info:
                        break
                    await asyncio.sleep(0.02)
            row = rows[0]
            assert row["app"] == "web" and row["synced"]
            assert row["types"]["routes"]["push_latency_ms"] is not None
            proxy.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
