"""Rate limits, circuit breakers, caller identity, governance events, telemetry and
instance health, through a real sidecar talking to a stand-in control plane.

The sidecar is `web` (node `web-1`): its outbound listener carries the rate limit and
circuit breaker filters with per-route configs (each virtual host picks a behaviour), its
inbound listener leads to the local app (an upstream) with outlier detection and a
per-calling-app rate limit. Whatever the sidecar posts to the control plane is checked
against the control plane's own request validators.
"""

from __future__ import annotations

import time

import httpx
import pytest

from plait.controlplane.api.governance_routes import _EVENTS, _TELEMETRY
from plait.testing import sidecar as sc
from plait.testing.fake_control import FakeControlPlane

pytestmark = pytest.mark.timeout(60)

RL = "plait.filters.http.rate_limit"
CB = "plait.filters.http.circuit_breaker"
RL_URL = "type.plait.io/plait.filters.http.rate_limit.v1.RateLimit"
CB_URL = "type.plait.io/plait.filters.http.circuit_breaker.v1.CircuitBreaker"
PRICING = "outbound|80||pricing"
LOCAL_APP = "inbound|8080||web"


def typed_struct(type_url: str, value: dict) -> dict:
    return {"@type": "type.googleapis.com/xds.type.v3.TypedStruct", "type_url": type_url,
            "value": value}


def rate_limit(**rule) -> dict:
    return {RL: typed_struct(RL_URL, {"rules": [{"name": "rl", **rule}]})}


def breaker(**b) -> dict:
    return {CB: typed_struct(CB_URL, {"breakers": [{"name": "cb", **b}]})}


def vhost(name: str, per_filter: dict | None = None) -> dict:
    route = sc.route(PRICING)
    if per_filter:
        route["typed_per_filter_config"] = per_filter
    return sc.virtual_host(name, [name], [route])


def with_filters(listener: dict, *filters: dict) -> dict:
    hcm = listener["filter_chains"][0]["filters"][-1]["typed_config"]
    hcm["http_filters"] = [*filters, sc.ROUTER]
    return listener


@pytest.fixture(scope="module")
def control():
    with FakeControlPlane() as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(control):
    with sc.upstreams("pricing", "app") as ups:
        outbound = with_filters(sc.listener("outbound", [
            vhost("echo"),
            vhost("limited", rate_limit(tokensPerFill=10, fillIntervalMs=1000)),
            vhost("limited-fallback", rate_limit(
                tokensPerFill=1, fillIntervalMs=60000,
                fallback={"status": 200, "body": "busy", "headers": {"x-degraded": "yes"}})),
            vhost("fragile", breaker(
                strategy="errorRatio", threshold=0.5, minRequests=4, statWindowMs=10000,
                openDurationMs=1000, halfOpenRequests=1,
                fallback={"status": 200, "body": "cached", "headers": {"x-degraded": "yes"}})),
            vhost("fragile-plain", breaker(strategy="errorCount", threshold=1, minRequests=1,
                                           statWindowMs=10000, openDurationMs=60000)),
            vhost("evented", breaker(name="evented", strategy="errorCount", threshold=0,
                                     minRequests=1, openDurationMs=300)),
        ]), {"name": RL}, {"name": CB})
        inbound = with_filters(
            sc.listener("inbound", [sc.virtual_host("app", ["*"], [sc.route(LOCAL_APP)])],
                        direction="INBOUND"),
            {"name": RL, "typed_config": typed_struct(RL_URL, {"rules": [{
                "name": "per-app", "key": "app", "tokensPerFill": 5, "fillIntervalMs": 60000,
                "match": {"path": {"prefix": "/by-app"}}}]})})
        config = sc.bootstrap(
            listeners=[outbound, inbound],
            clusters=[sc.cluster(PRICING, [ups["pricing"].port]),
                      sc.cluster(LOCAL_APP, [ups["app"].port], outlier_detection={
                          "consecutive_5xx": 2, "interval": "1s", "base_ejection_time": "1s",
                          "max_ejection_percent": 100})],
            node="web-1")
        config["node"]["metadata"] = {"app": "web", "registry": control.url,
                                      "telemetry_interval": 0.5, "lease_ttl": 3}
        with sc.start_sidecar(config) as sidecar:
            yield sidecar


def get(proxy, host: str, path: str = "/echo", *, listener: str = "outbound",
        client: httpx.Client | None = None, **headers) -> httpx.Response:
    send = client.get if client is not None else httpx.get
    return send(proxy.url(path, listener), headers={"host": host, **headers}, timeout=10)


def test_outbound_requests_say_who_calls_and_apps_cannot_forge_it(proxy):
    seen = dict(get(proxy, "echo", **{"x-plait-caller-app": "admin"}).json()["headers"])
    assert seen["x-plait-caller-app"] == "web" and seen["x-plait-caller"] == "web-1"
    inbound = dict(get(proxy, "app", "/echo", listener="inbound",
                       **{"x-plait-caller-app": "shop"}).json()["headers"])
    assert inbound["x-plait-caller-app"] == "shop"  # inbound passes the caller's word on
    assert "x-plait-caller" not in inbound


def test_a_burst_gets_the_bucket_and_the_rest_429(proxy):
    n = 40
    with httpx.Client(timeout=10) as client:
        start = time.monotonic()
        replies = [get(proxy, "limited", client=client) for _ in range(n)]
        elapsed = time.monotonic() - start
    admitted = sum(r.status_code == 200 for r in replies)
    refused = [r for r in replies if r.status_code != 200]
    # A full bucket of 10, plus 10 more for every whole fill interval the burst lasted.
    assert 10 <= admitted <= 10 + 10 * int(elapsed), (admitted, elapsed)
    assert len(refused) == n - admitted
    assert all(r.status_code == 429 and r.headers["x-plait-error"] == "rate_limited"
               for r in refused)
    assert proxy.stats().value("plait_rate_limit_refused_total", rule="rl",
                               listener="outbound") >= n - admitted


def test_each_calling_app_has_its_own_bucket(proxy):
    codes = {app: [get(proxy, "app", "/by-app/echo", listener="inbound",
                       **{"x-plait-caller-app": app}).status_code for _ in range(8)]
             for app in ("shop", "cart")}
    assert codes == {app: [200] * 5 + [429] * 3 for app in ("shop", "cart")}


def test_a_rate_limit_fallback_is_a_degraded_answer(proxy):
    assert get(proxy, "limited-fallback").status_code == 200
    reply = get(proxy, "limited-fallback")
    assert (reply.status_code, reply.text) == (200, "busy")
    assert reply.headers["x-degraded"] == "yes"
    assert reply.headers["x-plait-error"] == "rate_limited"


def poll(action, until, *, timeout: float = 5.0):
    """Repeat `action` until `until(result)`; the last result. Bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        result = action()
        if until(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_breaker_opens_on_errors_serves_the_fallback_and_a_probe_closes_it(proxy):
    assert [get(proxy, "fragile", "/status/503").status_code for _ in range(4)] == [503] * 4
    degraded = get(proxy, "fragile", "/echo")
    assert (degraded.status_code, degraded.text) == (200, "cached")
    assert degraded.headers["x-plait-error"] == "circuit_open"
    assert degraded.headers["x-degraded"] == "yes"
    # After openDurationMs one probe goes through; it succeeds, and the breaker closes.
    probe = poll(lambda: get(proxy, "fragile", "/echo"), lambda r: r.text != "cached")
    assert probe.status_code == 200 and probe.json()["name"] == "pricing"
    assert get(proxy, "fragile", "/echo").json()["name"] == "pricing"
    stats = proxy.stats()
    assert stats.value("plait_circuit_breaker_opened_total", breaker="cb") >= 1
    assert stats.value("plait_circuit_breaker_closed_total", breaker="cb") >= 1
    assert stats.value("plait_degrade_fallback_total", rule="cb") >= 1


def test_breaker_without_fallback_answers_503_circuit_open(proxy):
    assert [get(proxy, "fragile-plain", "/status/500").status_code for _ in range(2)] == [500] * 2
    reply = get(proxy, "fragile-plain", "/echo")
    assert reply.status_code == 503 and reply.headers["x-plait-error"] == "circuit_open"


def events_of(control, type_: str) -> list[dict]:
    return [e for batch in control.posts("/api/v1/events") for e in batch if e["type"] == type_]


def evented(control, type_: str) -> list[dict]:
    """The events of the breaker named "evented" (other tests' breakers send theirs too)."""
    return [e for e in events_of(control, type_) if e["detail"]["breaker"] == "evented"]


def limited_count(control) -> int:
    return sum(e["detail"]["count"] for e in events_of(control, "rateLimited")
               if e["detail"]["rule"] == "rl")


def test_events_and_telemetry_reach_the_control_plane_in_its_schema(proxy, control):
    get(proxy, "evented", "/status/503")
    assert get(proxy, "evented").headers.get("x-plait-error") == "circuit_open"
    poll(lambda: get(proxy, "evented"), lambda r: r.status_code == 200)
    for _ in range(12):  # more than the bucket holds: some refused
        get(proxy, "limited")
    refused = proxy.stats().value("plait_rate_limit_refused_total", rule="rl",
                                  listener="outbound")
    # Wait for this test's own events (earlier tests' breakers and limits sent theirs):
    # every refusal so far is counted in some rateLimited event, none twice.
    control.wait_for(lambda: evented(control, "breakerClose")
                     and limited_count(control) == refused, timeout=10)
    opened = evented(control, "breakerOpen")
    assert opened and opened[0]["service"] == "web" and opened[0]["nodeId"] == "web-1"
    reports = control.wait_for(
        lambda: [t for t in control.posts("/api/v1/telemetry") if "pricing" in t["upstreams"]],
        timeout=10)
    assert reports[0]["app"] == "web" and reports[0]["nodeId"] == "web-1"
    assert sum(t["upstreams"]["pricing"]["requests"] for t in reports) > 0
    assert all("inbound" not in name for t in reports for name in t["upstreams"])
    for batch in control.posts("/api/v1/events"):
        _EVENTS.validate_python(batch)  # raises if the control plane would refuse it
    for report in control.posts("/api/v1/telemetry"):
        _TELEMETRY.validate_python(report)


def evented_opens(control) -> int:
    return len(evented(control, "breakerOpen"))


def test_events_wait_while_the_control_plane_is_down(proxy, control):
    poll(lambda: get(proxy, "evented"), lambda r: r.status_code == 200)  # closed
    seen = evented_opens(control)
    control.status = 503
    try:
        before = proxy.stats().value("plait_governance_reports_failed_total")
        get(proxy, "fragile-plain", "/echo")  # refused: a breaker is open, nothing evented
        for _ in range(3):
            assert get(proxy, "echo").status_code == 200
        get(proxy, "evented", "/status/503")  # opens "evented" again: one event
        poll(lambda: proxy.stats().value("plait_governance_reports_failed_total"),
             lambda v: v > before)
        assert get(proxy, "echo").status_code == 200
    finally:
        control.status = 200
    control.wait_for(lambda: evented_opens(control) > seen, timeout=10)


def test_an_app_that_keeps_failing_is_marked_unhealthy_then_restored(proxy, control):
    def health_puts():
        return [b["healthy"] for b in control.posts("/api/v1/registry/leases/lease-1")
                if isinstance(b, dict) and "healthy" in b]

    for _ in range(2):
        assert get(proxy, "app", "/status/503", listener="inbound").status_code == 503
    control.wait_for(lambda: False in health_puts(), timeout=10)
    # The ejection lasts base_ejection_time (1 s); then the app is back in, and so is the
    # instance.
    control.wait_for(lambda: health_puts()[-1] is True and False in health_puts(), timeout=10)
    control.wait_for(lambda: [e for e in events_of(control, "ejection")
                              if e["cluster"] == LOCAL_APP], timeout=5)
    ejections = [e for e in events_of(control, "ejection") if e["cluster"] == LOCAL_APP]
    assert ejections[0]["service"] == "web"
    assert ejections[0]["detail"] == {"source": "outlierDetection"}


def test_every_worker_reports_its_refusals(control):
    """With two worker processes, the main process collects the forked worker's events
    over the worker channel: every 429 a client saw is in the events' counts."""
    with sc.upstreams("solo") as ups:
        outbound = with_filters(sc.listener("outbound", [
            sc.virtual_host("w", ["*"], [dict(sc.route("solo"), typed_per_filter_config=rate_limit(
                name="workers", tokensPerFill=1, fillIntervalMs=60000))])]), {"name": RL})
        config = sc.bootstrap(listeners=[outbound],
                              clusters=[sc.cluster("solo", [ups["solo"].port])], node="w-1")
        config["node"]["metadata"] = {"app": "two-workers", "registry": control.url,
                                      "telemetry_interval": 0.5}
        with sc.start_sidecar(config, concurrency=2) as sidecar:
            refused = sum(httpx.get(sidecar.url("/echo"), timeout=10).status_code == 429
                          for _ in range(20))  # a new connection each: both workers serve

            def counted():
                return sum(e["detail"]["count"] for e in events_of(control, "rateLimited")
                           if e["detail"]["rule"] == "workers")

            control.wait_for(lambda: counted() >= refused, timeout=10)
            # Buckets are per worker: each admitted one (all 20 connections landing on one
            # worker has a chance of 2 in a million).
            assert refused == 18 and counted() == refused
