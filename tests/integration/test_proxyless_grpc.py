"""Proxyless gRPC (grpcio's own xDS client) steered by the push server.

Two greeter servers answer "v1" and "v2"; a grpcio client process dials `xds:///greeter`
with a bootstrap pointing at the push server. Routing changes are made in the mesh view
and observed in where calls land. Weight splits are checked with a tolerance of five
standard deviations of the binomial sample, so the test fails on a wrong split, not on
bad luck (p < 1e-6).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from contextlib import asynccontextmanager

import pytest

from plait.controlplane.push import start_push
from plait.core.errors import ConfigError
from plait.model import parse_resource
from plait.testing.grpc_greeter import bootstrap, start_greeter
from plait.testing.meshview import FakeMeshView

DEADLINE = 60.0


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario, DEADLINE))


def rule(**traffic_policy) -> dict:
    spec = {"host": "greeter", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                           {"name": "v2", "labels": {"version": "v2"}}]}
    if traffic_policy:
        spec["trafficPolicy"] = traffic_policy
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "greeter"}, "spec": spec}


def split(v1: int, v2: int) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "greeter"},
            "spec": {"hosts": ["greeter"], "http": [{"route": [
                {"destination": {"host": "greeter", "subset": "v1"}, "weight": v1},
                {"destination": {"host": "greeter", "subset": "v2"}, "weight": v2}]}]}}


def by_header(regex: str) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "greeter"},
            "spec": {"hosts": ["greeter"], "http": [
                {"match": [{"headers": {"x-canary": {"regex": regex}}}],
                 "route": [{"destination": {"host": "greeter", "subset": "v2"}}]},
                {"route": [{"destination": {"host": "greeter", "subset": "v1"}}]}]}}


class Client:
    """The grpcio client process: `call(n, **metadata)` → {"versions": .., "errors": ..}."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def call(self, count: int, **metadata: str) -> dict:
        pairs = " ".join(f"{k.replace('_', '-')}={v}" for k, v in metadata.items())
        self.process.stdin.write(f"call {count} {pairs}\n".encode())
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        assert line, "the grpc client process died"
        return json.loads(line)

    async def until(self, predicate, count: int = 10, **metadata: str) -> dict:
        """Call in batches until a batch satisfies predicate (the caller's deadline bounds it)."""
        while True:
            result = await self.call(count, **metadata)
            if predicate(result):
                return result


@asynccontextmanager
async def mesh_with_greeters(view: FakeMeshView):
    """Greeters v1 and v2 registered in view, a push server, and a grpcio client process."""
    greeters = [await start_greeter("v1"), await start_greeter("v2")]
    process = None
    try:
        for (_, port), version in zip(greeters, ("v1", "v2")):
            view.register("greeter", "127.0.0.1", port, protocol="grpc", version=version)
        async with start_push(view, "127.0.0.1", 0) as push:
            env = dict(os.environ, GRPC_XDS_BOOTSTRAP_CONFIG=bootstrap(
                push.port, node_id="greeter-client", metadata={"app": "tester"}))
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "plait.testing.grpc_greeter", "client", "xds:///greeter",
                env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            assert (await process.stdout.readline()).strip() == b"ready"
            yield push, Client(process)
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        for server, _ in greeters:
            await server.stop(None)


def only(version: str):
    return lambda r: r["versions"] == {version: 10} and not r["errors"]


def within(count: int, expected_share: float, sample: int) -> bool:
    sigma = math.sqrt(sample * expected_share * (1 - expected_share))
    return abs(count - sample * expected_share) <= 5 * sigma


async def synced_after(push, old_routes_version: str) -> None:
    def done() -> bool:
        rows = push.proxy_status()
        routes = rows[0]["types"].get("routes", {}) if rows else {}
        return routes.get("version_sent") not in (None, old_routes_version) and routes["synced"]

    while not done():
        await asyncio.sleep(0.01)


def routes_version(push) -> str:
    return push.proxy_status()[0]["types"]["routes"]["version_sent"]


def test_weight_changes_move_grpc_traffic_between_versions():
    async def scenario():
        view = FakeMeshView()
        view.apply(rule(), split(100, 0))
        async with mesh_with_greeters(view) as (push, client):
            await client.until(only("v1"))
            row = push.proxy_status()[0]
            assert (row["node_id"], row["app"], row["mode"]) == ("greeter-client", "tester",
                                                                 "proxyless")

            view.apply(split(0, 100))
            await client.until(only("v2"))

            before = routes_version(push)
            view.apply(split(50, 50))
            await synced_after(push, before)
            await client.until(lambda r: len(r["versions"]) == 2)  # the new split is live
            sample = 400
            result = await client.call(sample)
            assert not result["errors"]
            assert within(result["versions"].get("v1", 0), 0.5, sample), result
            assert push.proxy_status()[0]["synced"]

    run(scenario())


def past_validation(regex: str):
    """by_header(regex) as a validated resource, its regex replaced without validation:
    what another control plane could send, which this one's API refuses."""
    resource = parse_resource(by_header("placeholder"))
    http = resource.spec.http[0]
    match = http.match[0]
    header = match.headers["x-canary"].model_copy(update={"regex": regex})
    match = match.model_copy(update={"headers": {"x-canary": header}})
    http = http.model_copy(update={"match": [match]})
    spec = resource.spec.model_copy(update={"http": [http, *resource.spec.http[1:]]})
    return resource.model_copy(update={"spec": spec})


def test_header_match_and_a_route_grpc_rejects():
    async def scenario():
        view = FakeMeshView()
        view.apply(rule(), by_header("yes|true"))
        async with mesh_with_greeters(view) as (push, client):
            await client.until(only("v2"), x_canary="yes")
            assert (await client.call(10))["versions"] == {"v1": 10}
            good = routes_version(push)

            # Python's `re` accepts lookahead, RE2 (gRPC's engine) does not. The API
            # checks with RE2 and refuses it; sent anyway, the client NACKs the route
            # table and keeps routing with the last good one.
            with pytest.raises(ConfigError, match="RE2"):
                view.apply(by_header("(?=y)yes"))
            view.apply(past_validation("(?=y)yes"))
            while not push.proxy_status()[0]["types"]["routes"]["last_nack"]:
                await asyncio.sleep(0.01)
            routes = push.proxy_status()[0]["types"]["routes"]
            assert routes["version_acked"] == good and not routes["synced"]
            assert "regex" in routes["last_nack"]["error"].lower()
            assert (await client.call(10, x_canary="yes"))["versions"] == {"v2": 10}
            assert push.counters()["nacks"] >= 1

            view.apply(by_header("no"))  # a good rule again: accepted, traffic follows
            await client.until(only("v1"), x_canary="yes")
            await client.until(only("v2"), x_canary="no")

    run(scenario())


def test_consistent_hash_keeps_each_caller_on_one_version():
    async def scenario():
        view = FakeMeshView()
        view.apply(rule(loadBalancer={"consistentHash": {"httpHeaderName": "x-user"}}))
        async with mesh_with_greeters(view) as (push, client):
            await client.until(lambda r: sum(r["versions"].values()) == 10, x_user="warm-up")
            seen = set()
            for user in range(20):
                result = await client.call(8, x_user=f"user-{user}")
                assert not result["errors"] and len(result["versions"]) == 1, result
                seen |= set(result["versions"])
            # 20 keys all on one of two equal hosts: probability 2 * 2**-20
            assert seen == {"v1", "v2"}

    run(scenario())


def test_an_injected_fault_fails_grpc_calls_with_the_status_asked_for():
    async def scenario():
        view = FakeMeshView()
        view.apply(rule(), split(100, 0))
        async with mesh_with_greeters(view) as (push, client):
            await client.until(only("v1"))
            chaos = split(100, 0)
            chaos["spec"]["http"][0]["fault"] = {
                "abort": {"grpcStatus": "RESOURCE_EXHAUSTED", "percentage": {"value": 100}}}
            view.apply(chaos)
            # a batch may straddle the switch; once the fault is live, every call fails
            result = await client.until(lambda r: not r["versions"])
            assert result["errors"] == {"RESOURCE_EXHAUSTED": 10}, result
            assert result["last_error"] == "Fault injected"
            view.apply(split(100, 0))  # the drill ends: calls succeed again
            await client.until(only("v1"))

    run(scenario())
