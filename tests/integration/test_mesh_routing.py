"""The mesh as its users see it while everything is up: instances come and go, traffic
rules are applied, bad rules are refused. One control plane, a caller `web`, two
instances of `pricing` (v1 and v2) and a caller `web2` with two worker processes, all
real processes on loopback, shared by the tests of this module; each test leaves the
mesh as it found it."""

from __future__ import annotations

import json
from http.client import HTTPConnection
import time

import pytest
import yaml

from plait.testing import procs
from plait.testing.mesh import (
    Mesh, binomial_tolerance, listener_owner, process_group, wait_until,
)

pytestmark = pytest.mark.timeout(60)

PRICING = {"pricing-v1", "pricing-v2"}
RULE_DEADLINE = 1.0  # seconds: every proxy has a change within a second


def subsets_rule() -> str:
    return yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "pricing"},
        "spec": {"host": "pricing", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}}]},
    })


def split_rule(v1: int, v2: int, **http) -> str:
    return yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "pricing"},
        "spec": {"hosts": ["pricing"], "http": [{
            "name": "split", **http,
            "route": [{"destination": {"host": "pricing", "subset": "v1"}, "weight": v1},
                      {"destination": {"host": "pricing", "subset": "v2"}, "weight": v2}]}]},
    })


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    mesh = Mesh(tmp_path_factory.mktemp("mesh"))
    try:
        web = mesh.add_app("web")
        mesh.add_app("pricing", instance="pricing-v1", labels={"version": "v1"})
        mesh.add_app("pricing", instance="pricing-v2", labels={"version": "v2"})
        mesh.add_app("web2", concurrency=2)
        mesh.wait_routable(web, "pricing", PRICING)
        yield mesh
    finally:
        mesh.close()


@pytest.fixture
def callers(mesh):
    """The two callers; afterwards every rule is deleted and both are back on the
    default route to pricing."""
    yield mesh.apps["web"], mesh.apps["web2"]
    mesh.delete_all()
    for caller in (mesh.apps["web"], mesh.apps["web2"]):
        wait_until(lambda: caller.routes("pricing") == ["default"], timeout=5,
                   what=f"{caller.instance} back on the default route")


def test_a_new_instance_is_called_within_a_second_of_its_sidecar_being_ready(mesh, callers):
    web, _ = callers
    extra = mesh.add_app("pricing", instance="pricing-v1b", labels={"version": "v1"},
                         sidecar=False)
    extra.start_sidecar()
    ready_at = time.monotonic()
    served = set()
    try:
        while "pricing-v1b" not in served:
            assert time.monotonic() - ready_at < 1.0, \
                f"pricing-v1b not called within 1 s of its ready line; answers: {served}"
            reply = web.call("pricing")
            served.add(reply.served_by or f"<{reply.status}>")
        assert mesh.instances("pricing")["pricing-v1b"]["labels"] == {"version": "v1"}
    finally:
        extra.stop_sidecar()
    mesh.wait_routable(web, "pricing", PRICING)


def test_a_stopped_sidecar_deregisters_its_app_and_callers_forget_it(mesh, callers):
    web, web2 = callers
    leaving = mesh.add_app("pricing", instance="pricing-leaving", labels={"version": "v1"})
    endpoint = f"127.0.0.1:{leaving.inbound_port}"
    wait_until(lambda: endpoint in web.service_endpoints("pricing"), timeout=5,
               what="web sees the new instance")

    assert leaving.stop_sidecar() == 0
    # Deregistration is the sidecar's last act; the lease (3 s) has not run out yet.
    assert "pricing-leaving" not in mesh.instances("pricing")
    listed = mesh.cli("services", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    ids = {i["instanceId"] for s in json.loads(listed.stdout) for i in s["instances"]}
    assert "pricing-leaving" not in ids and PRICING <= ids
    for caller in (web, web2):
        wait_until(lambda: endpoint not in caller.service_endpoints("pricing"),
                   timeout=RULE_DEADLINE, what=f"{caller.instance} drops {endpoint}")
    assert web.served_by("pricing", 20).keys() <= PRICING


def test_a_killed_sidecar_leaves_when_its_lease_expires(mesh, callers):
    web, _ = callers
    ttl = 1.0
    doomed = mesh.add_app("pricing", instance="pricing-doomed", labels={"version": "v2"},
                          lease_ttl=ttl)
    endpoint = f"127.0.0.1:{doomed.inbound_port}"
    wait_until(lambda: endpoint in web.service_endpoints("pricing"), timeout=5,
               what="web sees the new instance")
    assert mesh.instances("pricing")["pricing-doomed"]["ttl"] == ttl

    doomed.kill_sidecar()  # no deregistration: only the lease can remove it
    # The registry checks leases every 0.5 s; the push follows within a second.
    wait_until(lambda: "pricing-doomed" not in mesh.instances("pricing"),
               timeout=ttl + 2.0, what="the killed instance's lease expires")
    wait_until(lambda: endpoint not in web.service_endpoints("pricing"),
               timeout=RULE_DEADLINE, what=f"web drops {endpoint}")
    # When the instance on the lowest port leaves, the service's port, and so its
    # cluster's name, changes. A sidecar that applied the renamed cluster before its
    # endpoints came would pass the wait above with no endpoints at all, and answer 503
    # (no_cluster, then no_healthy_upstream) for a moment.
    assert web.served_by("pricing", 20).keys() <= PRICING


def wait_for_new_routes(caller, before: str) -> None:
    wait_until(lambda: caller.route_version() != before, timeout=RULE_DEADLINE,
               what=f"{caller.instance} serves the new routes")


def test_canary_weights_are_followed_and_shifted(mesh, callers):
    web, _ = callers
    # (v1, v2, calls): enough calls that 4 standard deviations tell the steps apart.
    steps = [(90, 10, 300), (50, 50, 300), (0, 100, 100)]
    for i, (v1, v2, n) in enumerate(steps):
        before = web.route_version()
        if i == 0:  # as a user starts a canary: subsets and the split, with the CLI
            out = mesh.apply(subsets_rule() + "---\n" + split_rule(v1, v2))
            assert "VirtualService default/pricing configured" in out
        else:  # then shifts it, as a release pipeline would, through the API
            mesh.apply_api(split_rule(v1, v2))
        wait_for_new_routes(web, before)
        counts = web.served_by("pricing", n)
        assert counts.keys() <= PRICING, counts
        share = v2 / 100
        assert abs(counts["pricing-v2"] - n * share) <= binomial_tolerance(n, share), \
            f"{v1}/{v2}: {counts}"
        assert web.routes("pricing") == ["split"]


def route_rule(*http: dict) -> str:
    return yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "pricing"}, "spec": {"hosts": ["pricing"], "http": list(http)},
    })


TO_PRICING = {"name": "rest", "route": [{"destination": {"host": "pricing"}}]}
# (rule's http entries, request (method, path), what the caller must see)
FEATURES = {
    "method match": (
        [{"name": "posts", "match": [{"method": {"exact": "POST"}}],
          "directResponse": {"status": 201}}, TO_PRICING],
        [(("POST", "/echo"), {"status": 201}), (("GET", "/echo"), {"status": 200, "upstream": True})]),
    "query match": (
        [{"name": "canary", "match": [{"queryParams": {"canary": {"exact": "1"}}}],
          "directResponse": {"status": 202}}, TO_PRICING],
        [(("GET", "/echo?canary=1"), {"status": 202}),
         (("GET", "/echo?canary=2"), {"status": 200, "upstream": True})]),
    "header edits": (
        [{**TO_PRICING, "headers": {"request": {"set": {"x-tenant": "blue"}},
                                    "response": {"set": {"x-policy": "on"}}}}],
        [(("GET", "/echo"), {"upstream_header": ("x-tenant", "blue"),
                             "header": ("x-policy", "on")})]),
    "redirect": (
        [{"name": "moved", "redirect": {"uri": "/v2/echo", "redirectCode": 302}}],
        [(("GET", "/echo"), {"status": 302, "header": ("location", "http://pricing/v2/echo")})]),
    "timeout": (
        [{**TO_PRICING, "timeout": "0.2s"}],
        [(("GET", "/delay/1000/echo"), {"status": 504}),
         (("GET", "/echo"), {"status": 200, "upstream": True})]),
    "direct response": (
        [{"name": "teapot", "directResponse": {"status": 418, "body": {"string": "short"}}}],
        [(("GET", "/echo"), {"status": 418, "body": b"short"})]),
    "direct response in bytes": (
        [{"name": "teapot", "directResponse": {"status": 418, "body": {"bytes": "c2hvcnQ="}}}],
        [(("GET", "/echo"), {"status": 418, "body": b"short"})]),
    "fault abort": (
        [{**TO_PRICING, "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}}}],
        [(("GET", "/echo"), {"status": 503})]),
    "destination header edits": (
        [{"name": "rest", "route": [{"destination": {"host": "pricing"}, "headers": {
            "request": {"set": {"x-dest": "pricing"}},
            "response": {"set": {"x-dest-policy": "on"}}}}]}],
        [(("GET", "/echo"), {"upstream_header": ("x-dest", "pricing"),
                             "header": ("x-dest-policy", "on")})]),
    "prefix rewrite": (
        [{**TO_PRICING, "match": [{"uri": {"prefix": "/v1/"}}], "rewrite": {"uri": "/"}}],
        [(("GET", "/v1/echo"), {"status": 200, "upstream_path": "/echo"})]),
    "regex rewrite": (
        [{**TO_PRICING, "rewrite": {"uriRegexRewrite": {"match": "^/old/([a-z]+)$",
                                                        "rewrite": "/\\1"}}}],
        [(("GET", "/old/echo"), {"status": 200, "upstream_path": "/echo"})]),
    "retries": (  # the first try on each instance fails; the third try succeeds
        [{**TO_PRICING, "retries": {"attempts": 3, "retryOn": "5xx"}}],
        [(("GET", "/flaky/retries/1/status/503"), {"status": 200, "upstream": True})]),
    "source labels, this caller": (
        [{"name": "web-only", "match": [{"sourceLabels": {"app": "web"}}],
          "directResponse": {"status": 203}}, TO_PRICING],
        [(("GET", "/echo"), {"status": 203})]),
    "source labels, other callers": (
        [{"name": "checkout-only", "match": [{"sourceLabels": {"app": "checkout"}}],
          "directResponse": {"status": 203}}, TO_PRICING],
        [(("GET", "/echo"), {"status": 200, "upstream": True})]),
}
KNOWN_BUGS: dict[str, str] = {}


@pytest.mark.parametrize("feature", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name]))
    if name in KNOWN_BUGS else name for name in FEATURES])
def test_an_applied_route_rule_acts_on_calls(mesh, callers, feature):
    """What `plait apply` accepts, the caller's sidecar does."""
    web, _ = callers
    http, calls = FEATURES[feature]
    before = web.route_version()
    mesh.apply_api(route_rule(*http))
    wait_for_new_routes(web, before)
    for (method, path), want in calls:
        reply = web.call("pricing", path, method=method)
        seen = {"status": reply.status, "upstream": reply.served_by in PRICING,
                "body": reply.body}
        if "header" in want:
            seen["header"] = (want["header"][0], reply.headers.get(want["header"][0]))
        if "upstream_header" in want:
            name = want["upstream_header"][0]
            got = [v for n, v in reply.json()["headers"] if n == name] if reply.served_by else []
            seen["upstream_header"] = (name, got[0] if got else None)
        if "upstream_path" in want:
            seen["upstream_path"] = reply.json()["path"] if reply.served_by else None
        assert {k: seen[k] for k in want} == want, f"{method} {path}"


def test_an_invalid_rule_is_refused_with_its_field_path_and_changes_nothing(mesh, callers):
    web, _ = callers
    applied = mesh.apply_api(subsets_rule() + "---\n" + split_rule(100, 0))
    version = next(a["version"] for a in applied if a["kind"] == "VirtualService")
    wait_until(lambda: web.routes("pricing") == ["split"], timeout=RULE_DEADLINE,
               what="web follows the first rule")
    path = "/api/v1/resources/VirtualService/default/pricing"
    before = mesh.api("GET", path).json()
    history = mesh.api("GET", path + "/history").json()["items"]
    routes = web.route_version()

    refused = mesh.cli("apply", "-f", "-", stdin=split_rule(0, 100, timeout="soon"))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: spec.http[0].timeout: "), refused.stderr
    refused = mesh.cli("apply", "-f", "-", stdin=split_rule(90, 20))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: spec.http[0].route: destination weights total "
                                     "110"), refused.stderr

    listed = mesh.cli("get", "vs")
    assert [line.split()[:4] for line in listed.stdout.splitlines()[1:]] == \
        [["default", "pricing", "pricing", str(version)]]
    assert mesh.api("GET", path).json() == before
    assert mesh.api("GET", path + "/history").json()["items"] == history
    assert web.route_version() == routes
    assert web.served_by("pricing", 50) == {"pricing-v1": 50}


def test_a_rule_the_sidecar_cannot_compile_is_nacked_and_the_last_good_one_kept(
        mesh, callers):
    """The control plane accepts every retry condition Istio passes to Envoy, among them
    `reset-before-request`; the sidecar knows a smaller set and refuses a route table
    asking for another, so this is a real NACK, end to end. (Should the sidecar learn
    that condition, pick another rule it refuses; with none left, the scripted ADS server
    of test_mesh_xds_server.py still covers NACKs.)"""
    web, _ = callers
    mesh.apply_api(subsets_rule() + "---\n" + split_rule(100, 0))
    wait_until(lambda: web.routes("pricing") == ["split"], timeout=RULE_DEADLINE,
               what="web follows the good rule")
    good = web.route_version()
    rejected_before = web.stats().value("plait_config_rejected_total")

    out = mesh.apply(split_rule(0, 100, retries={"attempts": 2,
                                                 "retryOn": "reset-before-request"}))
    assert "VirtualService default/pricing configured" in out  # the control plane took it
    wait_until(lambda: web.xds()["nacks"].get("RouteConfiguration", 0) > 0, timeout=5,
               what="web NACKs the route table")
    xds = web.xds()
    assert "retry_on" in xds["last_nack"] and "reset-before-request" in xds["last_nack"]
    assert xds["connected"]
    assert web.stats().value("plait_config_rejected_total") > rejected_before
    assert web.route_version() == good
    assert web.served_by("pricing", 50) == {"pricing-v1": 50}  # still the old 100/0

    status = mesh.cli("proxy-status", "-o", "json")
    assert status.returncode == 0, status.stderr
    row = next(p for p in json.loads(status.stdout) if p["node_id"] == "web")
    routes = row["types"]["routes"]
    assert not routes["synced"] and not row["synced"]
    assert routes["version_acked"] == good
    assert routes["last_nack"]["version"] == routes["version_sent"]
    assert "reset-before-request" in routes["last_nack"]["error"]


def test_a_change_reaches_every_worker_of_a_sidecar(mesh, callers):
    """`web2` runs two worker processes sharing its listener ports; connections spread
    over both, and after a weight change every connection, on either worker, follows it."""
    _, web2 = callers

    pids = process_group(web2.admin.pid)
    assert len(pids) == 2, pids
    mesh.apply_api(subsets_rule() + "---\n" + split_rule(100, 0))
    wait_until(lambda: web2.routes("pricing") == ["split"], timeout=RULE_DEADLINE,
               what="web2 follows the first rule")

    conns: list[tuple[HTTPConnection, int]] = []
    try:
        while len({pid for _, pid in conns}) < 2:
            assert len(conns) < 64, "64 connections and all on one worker"
            conn = HTTPConnection("127.0.0.1", web2.outbound_port, timeout=5)
            conn.connect()
            peer = conn.sock.getsockname()[1]
            pid = wait_until(lambda: listener_owner(web2.outbound_port, peer, pids),
                             timeout=5, what="a worker accepts the connection")
            conns.append((conn, pid))

        def answer(conn: HTTPConnection) -> str:
            conn.request("GET", "/echo", headers={"Host": "pricing"})
            resp = conn.getresponse()
            resp.read()
            return resp.getheader("x-upstream-name", f"<{resp.status}>")

        for conn, _ in conns:
            wait_until(lambda: answer(conn) == "pricing-v1", timeout=RULE_DEADLINE,
                       what="every connection follows the first rule")
        mesh.apply_api(split_rule(0, 100))
        per_worker = {pid: 0 for pid in pids}
        for conn, pid in conns:
            wait_until(lambda: answer(conn) == "pricing-v2", timeout=RULE_DEADLINE,
                       what=f"worker {pid} follows the new weights")
        for conn, pid in conns:
            for _ in range(max(1, 200 // len(conns))):
                assert answer(conn) == "pricing-v2", f"worker {pid} still sends to v1"
                per_worker[pid] += 1
        assert all(count > 0 for count in per_worker.values()), per_worker
    finally:
        for conn, _ in conns:
            conn.close()


def test_a_sidecar_cannot_take_over_another_sidecars_port(mesh, callers):
    web, _ = callers
    # Another app whose sidecar is misconfigured with web's outbound port; it calls only web.
    other = mesh.add_app("other", dependencies=("web",), sidecar=False)
    other.outbound_port = web.outbound_port
    try:
        try:
            other.start_sidecar()
        except procs.ProcessFailed:
            pass  # refusing the port it cannot have is the right answer
        outcomes = []
        for _ in range(40):  # fresh connections, so the kernel chooses a listener each time
            outcomes.append(web.call("pricing").status)
            web.close_connection()
        assert outcomes == [200] * 40
    finally:
        if other.sidecar is not None:
            other.stop_sidecar()


def test_a_live_change_keeps_in_flight_requests_and_connections(mesh, callers):
    """A new split governs the next request within a second, while a slow request started
    under the old routes completes, and the caller's kept-alive connection carries on."""
    web, _ = callers
    mesh.apply(subsets_rule() + "---\n" + split_rule(100, 0))
    wait_until(lambda: web.served_by("pricing", 5).keys() == {"pricing-v1"}, timeout=5,
               what="all calls on v1")
    slow = HTTPConnection("127.0.0.1", web.outbound_port, timeout=10)
    kept = HTTPConnection("127.0.0.1", web.outbound_port, timeout=10)
    try:
        kept.request("GET", "/echo", headers={"Host": "pricing"})
        first = kept.getresponse()
        first.read()
        assert first.getheader("x-upstream-name") == "pricing-v1"
        kept_port = kept.sock.getsockname()[1]
        slow.request("GET", "/delay/1500", headers={"Host": "pricing"})  # in flight
        before = web.route_version()
        mesh.apply_api(split_rule(0, 100))
        wait_for_new_routes(web, before)

        def kept_reaches_v2() -> bool:
            kept.request("GET", "/echo", headers={"Host": "pricing"})
            reply = kept.getresponse()
            reply.read()
            assert reply.status == 200 and not reply.will_close
            return reply.getheader("x-upstream-name") == "pricing-v2"

        wait_until(kept_reaches_v2, timeout=RULE_DEADLINE, what="the next request on v2")
        assert kept.sock.getsockname()[1] == kept_port  # the same connection throughout
        done = slow.getresponse()
        done.read()
        assert done.status == 200 and done.getheader("x-upstream-name") == "pricing-v1"
    finally:
        slow.close()
        kept.close()
