"""The seam between the config center/registry and the xDS push, in a real `plait control`:
what the CLI applies and the registry holds reaches an ADS client, and the proxy shows up
in `plait proxy-status`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import httpx
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from plait.testing.ads_client import AdsClient, make_node
from plait.testing.control import run_cli, start_control
from plait.xds.resources import CLUSTER, ENDPOINT

CANARY = Path(__file__).resolve().parents[2] / "examples" / "canary.yaml"
V2 = "outbound|9080|v2|reviews"


def cluster_names(response) -> set[str]:
    return {cluster_pb2.Cluster.FromString(r.value).name for r in response.resources}


def endpoint_ports(response) -> set[int]:
    ports = set()
    for r in response.resources:
        assignment = endpoint_pb2.ClusterLoadAssignment.FromString(r.value)
        for locality in assignment.endpoints:
            for lb in locality.lb_endpoints:
                ports.add(lb.endpoint.address.socket_address.port_value)
    return ports


async def until(client: AdsClient, type_url: str, first, done):
    """Follow pushes (acking each) until a response of `type_url` satisfies `done`.

    Pushes are debounced, so an answer may predate the latest change; each wait is bounded
    by recv's deadline."""
    response = first
    while response.type_url != type_url or not done(response):
        await client.ack(response)
        response = await client.recv(timeout=10)
    await client.ack(response)
    return response


def test_applied_rules_and_registered_instances_reach_an_xds_client(tmp_path):
    with start_control(tmp_path) as cp:
        assert cp.xds_address != "off", "the push side is not installed"
        assert run_cli(cp, "apply", "-f", str(CANARY)).returncode == 0
        for port, version in ((9080, "v1"), (9081, "v2")):
            r = httpx.post(f"{cp.api_url}/api/v1/registry/instances", json={
                "service": "reviews", "address": "127.0.0.1", "port": port,
                "labels": {"version": version}, "ttl": 30})
            assert r.status_code == 201, r.text

        async def scenario():
            async with grpc.aio.insecure_channel(cp.xds_address) as channel:
                client = AdsClient(channel, make_node("web-1", app="web"))
                try:
                    first = await client.subscribe(CLUSTER)
                    await until(client, CLUSTER, first, lambda r: V2 in cluster_names(r))
                    first = await client.subscribe(ENDPOINT, [V2])
                    await until(client, ENDPOINT, first, lambda r: endpoint_ports(r) == {9081})

                    status = await asyncio.to_thread(run_cli, cp, "proxy-status", "-o", "json")
                    assert "web-1" in [row.get("node_id") for row in json.loads(status.stdout)]

                    # Deleting the canary through the CLI is pushed: the subset clusters go,
                    # the registry's plain cluster for the service stays.
                    for kind in ("vs", "dr"):
                        gone = await asyncio.to_thread(run_cli, cp, "delete", kind, "reviews")
                        assert gone.returncode == 0, gone.stderr
                    update = await until(client, CLUSTER, await client.recv(timeout=10),
                                         lambda r: V2 not in cluster_names(r))
                    assert "outbound|9080||reviews" in cluster_names(update)
                finally:
                    client.close()

        asyncio.run(asyncio.wait_for(scenario(), 60))
        assert cp.stop() == 0, cp.stderr()
