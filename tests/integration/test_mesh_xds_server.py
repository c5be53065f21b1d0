"""A sidecar facing a control plane that sends what Plait's own never would.

`plait control` validates every rule before it is pushed, so it cannot send a route the
sidecar's compiler chokes on; another control plane (or a bug in ours) can. Here a
scripted ADS server, in this test process, feeds a real `plait sidecar` a good config,
then a route table whose regex no engine accepts, then a good one again. The sidecar must
NACK the bad one with its reason, keep serving the last good config, and still take the
next update: a bad push must never end config updates for the life of the process.
"""

from __future__ import annotations

import queue
import sys
import threading
from concurrent import futures
from http.client import HTTPConnection

import grpc
import pytest
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from plait.controlplane.push.clusters import static_cluster
from plait.controlplane.push.listeners import outbound_listener
from plait.testing import procs
from plait.testing.mesh import free_port, wait_until
from plait.testing.sidecar import READY, Sidecar, start_upstream
from plait.xds.resources import CLUSTER, LISTENER, ROUTE

pytestmark = pytest.mark.timeout(60)


class ScriptedAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """State-of-the-world ADS with resources set by the test: every subscription is
    answered with the current resources of its type, `push` sends a type again to every
    open stream, and every request received is kept for the test to read."""

    def __init__(self, resources: dict[str, list]) -> None:
        self.resources = dict(resources)
        self.versions = dict.fromkeys(resources, 1)
        self.requests: list[discovery_pb2.DiscoveryRequest] = []
        self._streams: list[queue.Queue] = []
        self._lock = threading.Lock()
        self._nonce = 0

    def _response(self, type_url: str) -> discovery_pb2.DiscoveryResponse:
        self._nonce += 1
        out = discovery_pb2.DiscoveryResponse(
            type_url=type_url, version_info=str(self.versions.get(type_url, 0)),
            nonce=str(self._nonce))
        for message in self.resources.get(type_url, ()):
            out.resources.add().Pack(message)
        return out

    def push(self, type_url: str, resources: list) -> str:
        """Replace the resources of a type and send them; returns the new version."""
        with self._lock:
            self.resources[type_url] = resources
            self.versions[type_url] = self.versions.get(type_url, 0) + 1
            for stream in self._streams:
                stream.put(self._response(type_url))
            return str(self.versions[type_url])

    def StreamAggregatedResources(self, request_iterator, context):
        out: queue.Queue = queue.Queue()
        with self._lock:
            self._streams.append(out)

        def read() -> None:
            try:
                for request in request_iterator:
                    with self._lock:
                        self.requests.append(request)
                        if not request.response_nonce:  # a new subscription
                            out.put(self._response(request.type_url))
            except grpc.RpcError:
                pass
            out.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            yield from iter(out.get, None)
        finally:
            with self._lock:
                self._streams.remove(out)

    def acked(self, type_url: str, version: str) -> bool:
        with self._lock:
            return any(r.type_url == type_url and r.version_info == version
                       and not r.HasField("error_detail") for r in self.requests)

    def nack(self, type_url: str) -> str | None:
        """The error of the first NACK of `type_url`, or None."""
        with self._lock:
            for r in self.requests:
                if r.type_url == type_url and r.HasField("error_detail"):
                    return r.error_detail.message
        return None


def route_table(*routes: route_components_pb2.Route) -> route_pb2.RouteConfiguration:
    table = route_pb2.RouteConfiguration(name="outbound")
    table.virtual_hosts.add(name="all", domains=["*"]).routes.extend(routes)
    return table


def to_app(*, regex: str = "", name: str = "to-app") -> route_components_pb2.Route:
    route = route_components_pb2.Route(name=name)
    if regex:
        route.match.safe_regex.regex = regex
    else:
        route.match.prefix = "/"
    route.route.cluster = "app"
    return route


def answer(status: int, body: str) -> route_components_pb2.Route:
    route = route_components_pb2.Route(name="answer")
    route.match.prefix = "/"
    route.direct_response.status = status
    route.direct_response.body.inline_string = body
    return route


@pytest.fixture
def upstream():
    app = start_upstream("app")
    yield app
    app.stop()


@pytest.fixture
def ads():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    scripted = ScriptedAds({})
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(scripted, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield scripted, f"127.0.0.1:{port}"
    server.stop(0)


def get(port: int) -> tuple[int, str]:
    conn = HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/echo", headers={"Host": "anything"})
        resp = conn.getresponse()
        return resp.status, resp.getheader("x-upstream-name") or resp.read().decode()
    finally:
        conn.close()


def test_a_route_the_compiler_chokes_on_is_nacked_and_updates_go_on(ads, upstream, tmp_path):
    server, target = ads
    outbound = free_port()
    server.resources = {LISTENER: [outbound_listener(outbound)],
                        CLUSTER: [static_cluster("app", "127.0.0.1", upstream.port)],
                        ROUTE: [route_table(to_app())]}
    server.versions = dict.fromkeys(server.resources, 1)
    argv = [sys.executable, "-m", "plait", "sidecar", "--xds", target, "--app", "web",
            "--node-id", "web", "--outbound-port", str(outbound), "--admin-port", "0",
            "--cache-dir", "", "--access-log", "off"]
    process, match = procs.start(argv, ready=READY, timeout=20, name="sidecar web")
    sidecar = Sidecar(process, match, tmp_path / "run")
    try:
        assert get(outbound) == (200, "app")

        # A repetition count past RE2's limit (1,000): it does not compile.
        server.push(ROUTE, [route_table(to_app(regex="/a{1001}"), to_app())])
        error = wait_until(lambda: server.nack(ROUTE), timeout=5,
                           what=f"the sidecar NACKs the route table\n{process.last_output()}")
        assert "regex" in error or "repetition" in error, error
        assert get(outbound) == (200, "app")
        assert sidecar.stats().value("plait_config_rejected_total") == 1
        assert sidecar.config_dump()["xds"]["connected"]

        fixed = server.push(ROUTE, [route_table(answer(200, "fixed"))])
        wait_until(lambda: server.acked(ROUTE, fixed), timeout=5,
                   what=f"the sidecar ACKs the next route table\n{process.last_output()}")
        wait_until(lambda: get(outbound) == (200, "fixed"), timeout=5,
                   what="the sidecar serves the next route table")
    finally:
        sidecar.stop()
