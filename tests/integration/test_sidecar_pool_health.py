"""Connection-pool circuit breaking and active health checks through a real sidecar.

Pool limits: a slow upstream behind `max_connections: 1, max_pending_requests: 1` serves
one request, queues one, and the sidecar refuses the rest at once with 503 `overflow`;
`max_requests` and `max_retries` refuse and count in the same way. Health checks: an
upstream that dies is taken out of balancing after `unhealthy_threshold` failed checks
and comes back, on the same port, after `healthy_threshold` passed ones.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from plait.testing import procs
from plait.testing import sidecar as sc

pytestmark = pytest.mark.timeout(60)


def thresholds(**limits) -> dict:
    return {"circuit_breakers": {"thresholds": [{"priority": "DEFAULT", **limits}]}}


def health_check(path: str = "/echo", *, interval: float = 0.2) -> dict:
    return {"health_checks": [{"timeout": "0.5s", "interval": sc.duration(interval),
                               "unhealthy_threshold": 2, "healthy_threshold": 2,
                               "http_health_check": {"path": path}}]}


@pytest.fixture(scope="module")
def proxy():
    with sc.upstreams("slow", "a", "b") as ups:
        def vhost(name, cluster, **route):
            return sc.virtual_host(name, [name], [sc.route(cluster, **route)])

        config = sc.bootstrap(
            listeners=[sc.listener("outbound", [
                vhost("one-connection", "one-connection"),
                vhost("one-request", "one-request"),
                vhost("no-retries", "no-retries",
                      retry=sc.retry_policy("5xx", num_retries=2, base_interval=0.01)),
                vhost("checked", "checked"),
            ])],
            clusters=[
                sc.cluster("one-connection", [ups["slow"].port],
                           **thresholds(max_connections=1, max_pending_requests=1)),
                sc.cluster("one-request", [ups["slow"].port], **thresholds(max_requests=1)),
                sc.cluster("no-retries", [ups["a"].port], **thresholds(max_retries=0)),
                sc.cluster("checked", [ups["a"].port, ups["b"].port], **health_check()),
            ])
        with sc.start_sidecar(config) as sidecar:
            sidecar.ups = ups
            yield sidecar


def burst(proxy, host: str, path: str, n: int) -> list[httpx.Response]:
    """`n` requests at once, each on its own connection."""
    def one(_):
        return httpx.get(proxy.url(path), headers={"host": host}, timeout=15)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_over_max_connections_one_waits_and_the_rest_overflow(proxy):
    before = proxy.stats()
    replies = burst(proxy, "one-connection", "/delay/1500/echo", 6)
    after = proxy.stats()
    ok = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 503]
    # One request holds the only connection, one waits for it, four are refused at once.
    assert (len(ok), len(refused)) == (2, 4), [r.status_code for r in replies]
    assert all(r.headers["x-plait-error"] == "overflow" for r in refused)

    def delta(name):
        return (after.value(name, cluster="one-connection")
                - before.value(name, cluster="one-connection"))

    assert delta("plait_upstream_rq_pending_overflow_total") == 4
    assert delta("plait_upstream_cx_overflow_total") == 5
    assert delta("plait_upstream_cx_total") == 1  # the waiter got the released connection
    assert after.value("plait_upstream_rq_pending_active", cluster="one-connection") == 0


def test_over_max_requests_is_refused_at_once(proxy):
    replies = burst(proxy, "one-request", "/delay/1500/echo", 3)
    codes = sorted(r.status_code for r in replies)
    assert codes == [200, 503, 503]
    assert {r.headers.get("x-plait-error") for r in replies if r.status_code == 503} == {
        "overflow"}


def test_a_retry_over_max_retries_is_not_made_and_counted(proxy):
    before = proxy.stats()
    reply = httpx.get(proxy.url("/status/503"), headers={"host": "no-retries"}, timeout=10)
    after = proxy.stats()
    assert reply.status_code == 503 and "x-plait-error" not in reply.headers
    assert (after.value("plait_upstream_rq_retry_overflow_total", cluster="no-retries")
            - before.value("plait_upstream_rq_retry_overflow_total", cluster="no-retries")) == 1
    assert (after.value("plait_upstream_rq_retry_total", cluster="no-retries")
            == before.value("plait_upstream_rq_retry_total", cluster="no-retries"))


def wait_for_stat(proxy, name: str, value: float, *, timeout: float = 10.0, **labels) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.stats().value(name, **labels) >= value:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name}{labels} did not reach {value} within {timeout}s")


def names_of(proxy, n: int) -> set[str]:
    with httpx.Client(timeout=10) as client:
        replies = [client.get(proxy.url("/echo"), headers={"host": "checked"})
                   for _ in range(n)]
    assert all(r.status_code == 200 for r in replies), [r.status_code for r in replies]
    return {r.headers["x-upstream-name"] for r in replies}


def test_health_checks_take_a_dead_upstream_out_and_bring_it_back(proxy):
    wait_for_stat(proxy, "plait_health_check_success_total", 4, cluster="checked")
    assert names_of(proxy, 10) == {"a", "b"}
    b = proxy.ups["b"]
    port = b.port
    b.stop()
    wait_for_stat(proxy, "plait_health_check_ejections_total", 1, cluster="checked")
    assert names_of(proxy, 20) == {"a"}  # no request meets the dead upstream
    status, body = proxy.admin_request("/clusters?format=json")
    checked = next(c for c in json.loads(body)["clusters"] if c["name"] == "checked")
    assert {e["address"]: e["health"] for e in checked["endpoints"]} == {
        f"127.0.0.1:{proxy.ups['a'].port}": "healthy", f"127.0.0.1:{port}": "failed_active_hc"}
    process, _ = procs.start(
        [sys.executable, "-m", "plait.testing.upstream", "--port", str(port), "--name", "b"],
        ready=sc.UPSTREAM_READY, timeout=15, name="upstream b again")
    proxy.ups["b"] = sc.Upstream(process, port, "b")  # stopped by the fixture
    wait_for_stat(proxy, "plait_health_check_returns_total", 1, cluster="checked")
    assert names_of(proxy, 10) == {"a", "b"}
    view = proxy.stats()
    assert view.value("plait_health_check_failure_total", cluster="checked") >= 2
