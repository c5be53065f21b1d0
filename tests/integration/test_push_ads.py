"""The ADS server against a hand-driven xDS client: ACK/NACK bookkeeping, who gets pushed
what, debounce, bad input and vanishing clients. Real grpc on 127.0.0.1 throughout."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import grpc
import pytest

from plait.controlplane.push import start_push
from plait.testing.ads_client import AdsClient, Request, make_node
from plait.testing.meshview import FakeMeshView
from plait.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

DEADLINE = 20.0


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario, DEADLINE))


@asynccontextmanager
async def served(view):
    async with start_push(view, "127.0.0.1", 0) as push:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{push.port}") as channel:
            yield push, channel


async def eventually(predicate, what: str, deadline: float = 5.0) -> None:
    async with asyncio.timeout(deadline):
        while not predicate():
            await asyncio.sleep(0.01)  # polling with a deadline, not a start-up guess
    assert predicate(), what


def row(push, node_id: str) -> dict:
    (found,) = [r for r in push.proxy_status() if r["node_id"] == node_id]
    return found


def lb_rule(policy: str) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "greeter"},
            "spec": {"host": "greeter", "trafficPolicy": {"loadBalancer": {"simple": policy}}}}


def greeter_view() -> FakeMeshView:
    view = FakeMeshView()
    view.register("greeter", "127.0.0.1", 50051, version="v1")
    return view


def test_ack_then_nack_keeps_the_last_good_version_and_is_not_resent():
    async def scenario():
        view = greeter_view()
        async with served(view) as (push, channel):
            client = AdsClient(channel, make_node("web-1", app="web"))
            first = await client.subscribe(CLUSTER)
            assert [r.type_url for r in first.resources] == [CLUSTER]
            await client.ack(first)
            await eventually(lambda: row(push, "web-1")["types"]["clusters"]["synced"], "ACK")
            good = first.version_info
            clusters = row(push, "web-1")["types"]["clusters"]
            assert clusters["version_acked"] == good
            assert clusters["push_latency_ms"] is not None

            view.apply(lb_rule("LEAST_REQUEST"))
            bad = await client.recv()
            assert bad.version_info != good
            await client.nack(bad, "LB policy is not supported", good_version=good)
            await eventually(lambda: push.counters()["nacks"] == 1, "NACK counted")
            clusters = row(push, "web-1")["types"]["clusters"]
            assert clusters["version_acked"] == good
            assert clusters["version_sent"] == bad.version_info
            assert clusters["synced"] is False
            assert clusters["last_nack"]["error"] == "LB policy is not supported"
            assert clusters["last_nack"]["version"] == bad.version_info
            assert row(push, "web-1")["synced"] is False

            # The rejected content is not sent again: the next response is the next change.
            view.apply(lb_rule("RANDOM"))
            fixed = await client.recv()
            assert fixed.version_info not in (good, bad.version_info)
            await client.ack(fixed)
            await eventually(lambda: row(push, "web-1")["synced"], "ACK after NACK")
            assert push.counters()["acks"] == 2
            client.close()

    run(scenario())


def test_wildcard_clients_get_sidecar_resources_and_named_clients_api_listeners():
    async def scenario():
        async with served(greeter_view()) as (push, channel):
            sidecar = AdsClient(channel, make_node("sidecar-1", app="web", app_port=8080))
            listeners = await sidecar.subscribe(LISTENER)
            assert len(listeners.resources) == 2  # outbound and inbound
            grpc_client = AdsClient(channel, make_node("grpc-1"))
            api = await grpc_client.subscribe(LISTENER, ["greeter", "missing"])
            assert len(api.resources) == 1
            routes = await grpc_client.subscribe(ROUTE, ["greeter"])
            assert len(routes.resources) == 1
            assert row(push, "sidecar-1")["mode"] == "sidecar"
            assert row(push, "grpc-1")["mode"] == "proxyless"
            assert row(push, "grpc-1")["types"]["listeners"]["subscribed"] == ["greeter",
                                                                             "missing"]
            sidecar.close()
            grpc_client.close()

    run(scenario())


async def _sidecar_on_endpoints(channel, node_id: str, service: str) -> AdsClient:
    client = AdsClient(channel, make_node(node_id, dependencies=[service]))
    clusters = await client.subscribe(CLUSTER)
    await client.ack(clusters)
    eds = await client.subscribe(ENDPOINT, [f"outbound|80||{service}"])
    await client.ack(eds)
    return client


def test_a_change_is_pushed_only_to_proxies_it_affects():
    async def scenario():
        view = FakeMeshView()
        view.register("a", "10.0.0.1", 80)
        view.register("b", "10.0.1.1", 80)
        async with served(view) as (push, channel):
            on_a = await _sidecar_on_endpoints(channel, "needs-a", "a")
            on_b = await _sidecar_on_endpoints(channel, "needs-b", "b")
            before = row(push, "needs-b")["types"]["endpoints"]["version_sent"]

            view.register("a", "10.0.0.2", 80)
            pushed = await on_a.recv()
            assert pushed.type_url == ENDPOINT
            await on_a.ack(pushed)
            view.register("b", "10.0.1.2", 80)
            # needs-b's next message is about b: a's change never reached it.
            for_b = await on_b.recv()
            assert for_b.type_url == ENDPOINT and for_b.version_info != before
            assert push.counters()["mesh_revisions"] == 2
            on_a.close()
            on_b.close()

    run(scenario())


def test_a_burst_of_changes_is_debounced_into_one_push():
    async def scenario():
        view = FakeMeshView()
        view.register("a", "10.0.0.1", 80)
        async with served(view) as (push, channel):
            client = await _sidecar_on_endpoints(channel, "needs-a", "a")
            pushes = push.counters()["pushes"]
            for n in range(2, 22):
                view.register("a", f"10.0.0.{n}", 80)
            pushed = await client.recv()
            assert sum(len(loc.lb_endpoints) for r in pushed.resources
                       for loc in _assignment(r).endpoints) == 21
            assert push.counters()["mesh_revisions"] == 1
            assert push.counters()["pushes"] == pushes + 1
            client.close()

    run(scenario())


def test_a_steady_stream_of_changes_is_still_pushed_before_it_stops():
    # Changes every 20 ms never leave 100 ms of quiet; the debouncer's maximum delay must
    # push anyway, while the changes are still coming.
    async def scenario():
        view = FakeMeshView()
        view.register("a", "10.0.0.1", 80)
        async with served(view) as (push, channel):
            client = await _sidecar_on_endpoints(channel, "needs-a", "a")
            pushed = asyncio.ensure_future(client.recv(timeout=None))
            n = 1
            while not pushed.done():
                n += 1
                assert n < 250, "no push after 5 s of continuous changes"
                view.register("a", f"10.0.{n // 250}.{n % 250}", 80)
                await asyncio.sleep(0.02)  # the pace of the changes, not a wait for readiness
            assert (await pushed).type_url == ENDPOINT
            assert push.counters()["mesh_revisions"] >= 1
            client.close()

    run(scenario())


def _assignment(packed):
    from envoy.config.endpoint.v3 import endpoint_pb2

    found = endpoint_pb2.ClusterLoadAssignment()
    packed.Unpack(found)
    return found


def test_a_stale_nonce_still_changes_the_subscription():
    async def scenario():
        view = FakeMeshView()
        view.register("a", "10.0.0.1", 80)
        view.register("b", "10.0.1.1", 80)
        async with served(view) as (push, channel):
            client = AdsClient(channel, make_node("n"))
            first = await client.subscribe(ENDPOINT, ["outbound|80||a"])
            await client.ack(first)
            await client.send(ENDPOINT, ["outbound|80||a", "outbound|80||b"],
                              version=first.version_info, nonce="not-the-last-nonce")
            both = await client.recv()
            assert len(both.resources) == 2
            assert push.counters()["stale_requests"] == 1
            client.close()

    run(scenario())


def test_an_unknown_type_gets_an_empty_answer_and_a_counter():
    async def scenario():
        async with served(greeter_view()) as (push, channel):
            client = AdsClient(channel, make_node("n"))
            secret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            answer = await client.subscribe(secret, ["cert"])
            assert answer.type_url == secret and not answer.resources
            assert push.counters()["unknown_type_requests"] == 1
            clusters = await client.subscribe(CLUSTER)  # the stream is still usable
            assert clusters.resources
            client.close()

    run(scenario())


@pytest.mark.parametrize(("request_bytes", "detail"), [
    (Request(node=make_node("n")).SerializeToString(), "type_url is required"),
    (Request(type_url=CLUSTER, node=make_node("n", app_port="http")).SerializeToString(),
     "node.metadata.app_port"),
    (b"\xff\xff\xff\xff", "not a DiscoveryRequest"),
])
def test_malformed_requests_end_the_stream_with_invalid_argument(request_bytes, detail):
    async def scenario():
        async with served(greeter_view()) as (push, channel):
            call = channel.stream_stream(
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
                "StreamAggregatedResources")()
            await call.write(request_bytes)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.read()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert detail in caught.value.details()
            assert push.counters()["malformed_requests"] == 1
            # and the server carries on for everyone else
            healthy = AdsClient(channel, make_node("after"))
            assert (await healthy.subscribe(CLUSTER)).resources
            healthy.close()

    run(scenario())


def test_vanishing_clients_leave_no_streams_or_tasks_behind():
    async def scenario():
        view = greeter_view()
        async with served(view) as (push, channel):
            baseline = len(asyncio.all_tasks())
            clients = []
            for n in range(5):
                client = AdsClient(channel, make_node(f"gone-{n}"))
                await client.subscribe(CLUSTER)  # answered, never ACKed
                clients.append(client)
            assert push.counters()["connected_proxies"] == 5
            for client in clients:
                client.close()
            await eventually(lambda: push.counters()["connected_proxies"] == 0, "streams closed")
            await eventually(lambda: len(asyncio.all_tasks()) <= baseline, "tasks ended")
            view.register("greeter", "127.0.0.2", 50051)  # a push with nobody to push to
            survivor = AdsClient(channel, make_node("survivor"))
            assert (await survivor.subscribe(CLUSTER)).resources
            survivor.close()
            assert push.counters()["streams_closed"] >= 5

    run(scenario())


def test_per_type_discovery_services_answer_like_ads():
    async def scenario():
        async with served(greeter_view()) as (push, channel):
            from envoy.service.cluster.v3 import cds_pb2_grpc

            stub = cds_pb2_grpc.ClusterDiscoveryServiceStub(channel)
            call = stub.StreamClusters()
            await call.write(Request(node=make_node("cds-only")))  # no type URL needed
            answer = await call.read()
            assert answer.type_url == CLUSTER and answer.resources
            call.cancel()

    run(scenario())


def test_a_change_reverted_while_the_push_is_in_flight_still_reaches_the_proxy():
    # The proxy stops reading, so the write of a large response waits on HTTP/2 flow
    # control; meanwhile the change is reverted. The server must compare the reverted
    # content with what is on its way (B), not with what was ACKed before (A).
    from plait.controlplane.mesh import Instance

    def fleet(prefix: str) -> list[Instance]:
        return [Instance(service="big", address=f"{prefix}.{n // 250}.{n % 250}", port=80,
                         instance_id=f"{prefix}-{n}") for n in range(6000)]

    async def scenario():
        view = FakeMeshView()
        view.set_instances("big", fleet("10.1"))
        async with start_push(view, "127.0.0.1", 0) as push:
            options = [("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", -1)]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{push.port}",
                                                 options=options) as channel:
                client = AdsClient(channel, make_node("slow-reader"))
                first = await client.subscribe(ENDPOINT, ["outbound|80||big"])
                await client.ack(first)
                await eventually(lambda: push.counters()["acks"] == 1, "ACK")
                view.set_instances("big", fleet("10.2"))  # B: too big for the window
                await eventually(lambda: push.counters()["mesh_revisions"] == 1, "push B")
                view.set_instances("big", fleet("10.1"))  # back to A
                await eventually(lambda: push.counters()["mesh_revisions"] == 2, "revert")
                middle = await client.recv()
                assert middle.version_info != first.version_info
                await client.ack(middle)
                last = await client.recv()
                assert last.version_info == first.version_info
                client.close()

    run(scenario())
