"""Plait's governance kinds through a real mesh: a global RateLimit divided among the
instances of the service it protects, a CircuitBreaker in the caller's sidecar, and
Degrade answers for both, each applied with the API and checked on real calls.

One control plane, a caller `web` and three instances of `pricing`; a fourth joins in the
last test. Rules select paths of their own, and each test deletes what it applied.
"""

from __future__ import annotations

import pytest
import yaml

from plait.testing.mesh import Mesh, wait_until

pytestmark = pytest.mark.timeout(60)

PRICING = ["pricing-1", "pricing-2", "pricing-3"]  # instance ids, in the order shares go


def rate_limit(name: str, requests: int, *, prefix: str) -> str:
    # A period far longer than the test: no bucket refills meanwhile, so what is admitted
    # is exactly the buckets' size, which the control plane divided.
    return yaml.safe_dump({
        "apiVersion": "plait.io/v1alpha1", "kind": "RateLimit", "metadata": {"name": name},
        "spec": {"service": "pricing", "match": {"path": {"prefix": prefix}},
                 "rules": [{"key": "service", "limit": {"requests": requests, "per": "1h"},
                            "scope": "global"}]},
    })


def degrade(name: str, when: list[str], body: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "plait.io/v1alpha1", "kind": "Degrade", "metadata": {"name": name},
        "spec": {"service": "pricing", "when": when,
                 "fallback": {"status": 200, "headers": {"content-type": "text/plain"},
                              "body": body}},
    })


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    mesh = Mesh(tmp_path_factory.mktemp("mesh"))
    try:
        web = mesh.add_app("web")
        for instance in PRICING:
            mesh.add_app("pricing", instance=instance)
        mesh.wait_routable(web, "pricing", set(PRICING))
        yield mesh
    finally:
        mesh.close()


@pytest.fixture
def applied(mesh):
    """Apply governance YAML and wait until every sidecar it concerns has it; everything
    applied is deleted afterwards."""
    done: list[dict] = []

    def apply(text: str, *, callers=("web",), instances=tuple(PRICING)) -> None:
        # These rules change listeners (a callee's inbound filter, a caller's outbound
        # chain), which registry changes never do: a new listener version is the rule.
        apps = [mesh.apps[name] for name in (*callers, *instances)]
        before = {app.instance: listener_version(app) for app in apps}
        done.extend(mesh.apply_api(text))
        for app in apps:
            wait_until(lambda: listener_version(app) != before[app.instance],
                       timeout=2, what=f"{app.instance} takes the new rules")
            # A caller's breaker travels in its routes, which may follow the listener:
            # wait until everything the control plane sent this proxy is ACKed.
            wait_until(lambda: synced(mesh, app), timeout=2,
                       what=f"{app.instance} has ACKed every type")

    yield apply
    for item in done:
        gone = mesh.api("DELETE", f"/api/v1/resources/{item['kind']}/{item['namespace']}/"
                                  f"{item['name']}")
        assert gone.status_code in (200, 404), gone.text


def synced(mesh, app) -> bool:
    proxy = mesh.proxies().get(app.instance)  # an app's node id is its instance name
    return proxy is not None and all(
        t.get("version_acked") == t.get("version_sent") for t in proxy["types"].values())


def listener_version(app) -> str:
    """The Listener version of the config the sidecar serves (versions are L/R/C/E)."""
    return app.config_dump()["version"].split("/")[0]


def outcomes(web, n: int, path: str) -> dict[str, int]:
    """Who answered each of `n` calls: an instance, or "<status reason>"."""
    out: dict[str, int] = {}
    for _ in range(n):
        reply = web.call("pricing", path)
        key = reply.served_by if reply.status == 200 else reply.failure
        out[key] = out.get(key, 0) + 1
    return out


def test_a_global_rate_limit_admits_the_quota_across_all_instances(mesh, applied):
    web = mesh.apps["web"]
    applied(rate_limit("quota", 31, prefix="/quota/"), callers=())  # the callee enforces

    # 120 calls, 40 to each instance (round robin); each admits exactly its share of 31:
    # 11, 10, 10 by instance id, and answers the rest itself with 429 rate_limited.
    seen = outcomes(web, 120, "/quota/echo")
    assert seen == {"pricing-1": 11, "pricing-2": 10, "pricing-3": 10,
                    "<429 rate_limited>": 89}, seen
    refused = sum(mesh.apps[i].stats().value("plait_rate_limit_refused_total")
                  for i in PRICING)
    assert refused == 89
    # a path the rule does not match is not limited
    assert outcomes(web, 9, "/echo").keys() == set(PRICING)

    # With a Degrade, a refusal is its fallback, still marked as rate limited.
    applied(degrade("quota", ["rateLimited"], "try later"), callers=())
    reply = web.call("pricing", "/quota/echo")
    assert (reply.status, reply.body, reply.headers.get("x-plait-error")) == \
        (200, b"try later", "rate_limited")


def test_the_shares_follow_the_instances_that_are_registered(mesh, applied):
    web = mesh.apps["web"]
    fourth = mesh.add_app("pricing", instance="pricing-4")
    try:
        everyone = [*PRICING, "pricing-4"]
        mesh.wait_routable(web, "pricing", set(everyone))
        applied(rate_limit("quota-of-four", 31, prefix="/four/"), callers=(),
                instances=tuple(everyone))
        seen = outcomes(web, 160, "/four/echo")
        assert seen == {"pricing-1": 8, "pricing-2": 8, "pricing-3": 8, "pricing-4": 7,
                        "<429 rate_limited>": 129}, seen
    finally:
        fourth.stop_sidecar()
        mesh.wait_routable(web, "pricing", set(PRICING))


def test_a_circuit_breaker_opens_serves_the_fallback_and_closes_again(mesh, applied):
    web = mesh.apps["web"]
    applied(yaml.safe_dump({
        "apiVersion": "plait.io/v1alpha1", "kind": "CircuitBreaker",
        "metadata": {"name": "fragile"},
        "spec": {"service": "pricing", "match": {"path": {"prefix": "/status/"}},
                 "strategy": "errorRatio", "threshold": 0.5, "minRequests": 5,
                 "statWindow": "10s", "openDuration": "1s"},
    }) + "---\n" + degrade("fragile", ["circuitOpen"], "cached price"), instances=())

    failing = [web.call("pricing", "/status/503").status for _ in range(5)]
    assert failing == [503] * 5  # five failures in the window: the breaker opens
    reply = web.call("pricing", "/status/200")
    assert (reply.status, reply.body, reply.headers.get("x-plait-error"), reply.served_by) \
        == (200, b"cached price", "circuit_open", "")
    assert web.stats().value("plait_circuit_breaker_rejected_total") >= 1
    assert web.call("pricing", "/echo").served_by in PRICING  # other paths are not guarded
    # after openDuration one probe goes through; it succeeds and the breaker closes
    wait_until(lambda: web.call("pricing", "/status/200").served_by in PRICING, timeout=5,
               what="the breaker lets a probe through and closes")
    assert outcomes(web, 6, "/status/200").keys() == set(PRICING)
