"""Traffic rules that act on the caller's choice of endpoint, end to end: mirroring,
consistent hashing, locality failover and outlier ejection, each applied as Istio YAML to
a real control plane and checked on real calls through real sidecars.

One control plane; a caller `web` in region r1, zone a; a caller `web2` with no locality;
`pricing-a` (version v1, zone a) and `pricing-b` (version v2, zone b), both in region r1.
Every test leaves the mesh as it found it: no rules, both instances healthy and called.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from plait.testing.mesh import Mesh, binomial_tolerance, wait_until

pytestmark = pytest.mark.timeout(60)

PRICING = {"pricing-a", "pricing-b"}
RULE_DEADLINE = 1.0  # seconds: every proxy has a change within a second


def destination_rule(**traffic_policy) -> str:
    return yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "pricing"},
        "spec": {"host": "pricing", "trafficPolicy": traffic_policy, "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}}]},
    })


def virtual_service(*http: dict) -> str:
    return yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "pricing"}, "spec": {"hosts": ["pricing"], "http": list(http)},
    })


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    mesh = Mesh(tmp_path_factory.mktemp("mesh"))
    try:
        web = mesh.add_app("web", labels={"region": "r1", "zone": "a"})
        web2 = mesh.add_app("web2")
        mesh.add_app("pricing", instance="pricing-a",
                     labels={"version": "v1", "region": "r1", "zone": "a"})
        mesh.add_app("pricing", instance="pricing-b",
                     labels={"version": "v2", "region": "r1", "zone": "b"})
        for caller in (web, web2):
            mesh.wait_routable(caller, "pricing", PRICING)
        yield mesh
    finally:
        mesh.close()


def health(caller) -> dict[tuple[str, str], str]:
    """(cluster, endpoint) → "healthy" / "ejected" / ..., over the caller's clusters for
    pricing."""
    status, body = caller.admin.admin_request("/clusters?format=json")
    assert status == 200, body
    return {(c["name"], e["address"]): e["health"] for c in json.loads(body)["clusters"]
            if c["name"].endswith("|pricing") for e in c["endpoints"]}


@pytest.fixture
def clean(mesh):
    yield mesh
    for app in PRICING:
        mesh.apps[app].upstream.fail(0)
    for caller in (mesh.apps["web"], mesh.apps["web2"]):
        # Ejections end before their rule goes: a host ejected under a rule that is then
        # deleted stays out of its cluster until the next cluster change (the sidecar's
        # detector returns it to the cluster it ejected it from).
        wait_until(lambda: set(health(caller).values()) == {"healthy"}, timeout=10,
                   what=f"{caller.instance} has every pricing endpoint back")
    mesh.delete_all()
    for caller in (mesh.apps["web"], mesh.apps["web2"]):
        wait_until(lambda: caller.served_by("pricing", 20).keys() == PRICING, timeout=15,
                   what=f"{caller.instance} calls both instances again")


def apply(mesh: Mesh, caller, text: str) -> None:
    before = caller.config_dump()["version"]
    mesh.apply_api(text)
    wait_until(lambda: caller.config_dump()["version"] != before, timeout=RULE_DEADLINE,
               what=f"{caller.instance} takes the new rules")


def test_a_mirrored_share_reaches_the_shadow_marked_as_shadow_traffic(clean):
    mesh = clean
    web = mesh.apps["web"]
    shadow = mesh.apps["pricing-b"].upstream
    seen_before = shadow.count()["authorities"].get("pricing-shadow", 0)
    mirrored_before = web.stats().value("plait_upstream_rq_mirror_total")
    apply(mesh, web, destination_rule() + "---\n" + virtual_service({
        "name": "mirrored", "route": [{"destination": {"host": "pricing", "subset": "v1"}}],
        "mirror": {"host": "pricing", "subset": "v2"}, "mirrorPercentage": {"value": 50}}))

    n = 200
    assert web.served_by("pricing", n) == {"pricing-a": n}  # the caller sees only v1
    mirrored = web.stats().value("plait_upstream_rq_mirror_total") - mirrored_before
    assert abs(mirrored - n / 2) <= binomial_tolerance(n, 0.5), mirrored
    # fire and forget: the copies arrive on their own time, all of them as pricing-shadow
    wait_until(lambda: shadow.count()["authorities"].get("pricing-shadow", 0) - seen_before
               == mirrored, timeout=5, what=f"{mirrored:g} mirrored requests reach v2")


def test_a_cookie_keeps_each_user_on_one_instance(clean):
    mesh = clean
    web = mesh.apps["web"]
    apply(mesh, web, destination_rule(
        loadBalancer={"consistentHash": {"httpCookie": {"name": "user"}}}))

    homes: dict[str, set[str]] = {}
    for user in range(24):
        for _ in range(5):
            reply = web.call("pricing", headers={"Cookie": f"theme=dark; user=u{user}"})
            assert reply.status == 200, reply.failure
            homes.setdefault(f"u{user}", set()).add(reply.served_by)
    assert all(len(home) == 1 for home in homes.values()), homes
    # users spread over both (all 24 on one instance: chance 2 in 2^24)
    assert set().union(*homes.values()) == PRICING
    # without the cookie the ring has no key and picks at random
    assert web.served_by("pricing", 40).keys() == PRICING


def test_a_zone_calls_its_own_instance_fails_over_and_comes_back(clean):
    mesh = clean
    web, web2 = mesh.apps["web"], mesh.apps["web2"]
    local = mesh.apps["pricing-a"].upstream
    apply(mesh, web, destination_rule(outlierDetection={
        "consecutive5xxErrors": 2, "interval": "1s", "baseEjectionTime": "2s",
        "maxEjectionPercent": 100}))
    # The rule reaches the cluster and its endpoints in separate updates: wait for the
    # endpoints' priorities, zone b behind zone a, before counting where calls go.
    remote = f"127.0.0.1:{mesh.apps['pricing-b'].inbound_port}"
    wait_until(lambda: web.endpoint_priorities("pricing").get(remote, 0) > 0,
               timeout=RULE_DEADLINE, what="web puts zone b's instance behind zone a's")

    assert web.served_by("pricing", 40) == {"pricing-a": 40}  # zone a stays in zone a
    assert web2.served_by("pricing", 40).keys() == PRICING  # no locality: both

    local.fail(503)
    # Two 503s in a row eject pricing-a; the default retry on 503 lands on pricing-b.
    wait_until(lambda: web.call("pricing").served_by == "pricing-b", timeout=5,
               what="web fails over to zone b")
    assert web.served_by("pricing", 40) == {"pricing-b": 40}
    assert web.stats().value("plait_outlier_ejections_total") >= 1

    local.fail(0)
    # Back after the ejection time (2 s), then all of it again
    wait_until(lambda: web.call("pricing").served_by == "pricing-a", timeout=10,
               what="web returns to zone a once pricing-a heals")
    assert web.served_by("pricing", 40) == {"pricing-a": 40}


def test_outlier_detection_ejects_a_failing_instance(clean):
    mesh = clean
    web2 = mesh.apps["web2"]
    failing = mesh.apps["pricing-b"].upstream
    apply(mesh, web2, destination_rule(outlierDetection={
        "consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": "3s",
        "maxEjectionPercent": 50}) + "---\n" + virtual_service(
        {"name": "no-retries", "retries": {"attempts": 0},
         "route": [{"destination": {"host": "pricing"}}]}))
    ejections = web2.stats().value("plait_outlier_ejections_total")

    failing.fail(503)
    seen = Counter(web2.served_by("pricing", 60))
    # exactly three 503s (the threshold), then pricing-b is out and pricing-a takes all
    assert seen == {"<503>": 3, "pricing-a": 57}, seen
    assert web2.stats().value("plait_outlier_ejections_total") == ejections + 1
    failing_endpoint = f"127.0.0.1:{mesh.apps['pricing-b'].inbound_port}"
    assert {address: state for (cluster, address), state in health(web2).items()
            if "||" in cluster} == {failing_endpoint: "ejected",
                                    f"127.0.0.1:{mesh.apps['pricing-a'].inbound_port}":
                                    "healthy"}
