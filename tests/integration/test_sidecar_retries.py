"""Retries and timeouts through a real sidecar: what is retried, what is not, what it
costs the caller and how it is counted.

Virtual hosts pick the behaviour under test (Host: retry-5xx, per-try, ...); the upstream's
path picks what the upstream does (`/flaky/KEY/N/...` misbehaves for the first N requests).
"""

from __future__ import annotations

import itertools
import json
import socket

import httpx
import pytest

from plait.testing import sidecar as sc

pytestmark = pytest.mark.timeout(60)
KEYS = itertools.count()


def key() -> str:
    """A fresh /flaky key: each test's misbehaviour starts from zero."""
    return f"k{next(KEYS)}"


@pytest.fixture(scope="module")
def dead_port():
    # Bound but not listening: connections are refused, and no one else can take the port.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


@pytest.fixture(scope="module")
def blackhole_port():
    # A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    # neither succeeds nor fails (a connect timeout, on loopback).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    yield port
    for c in fillers:
        c.close()
    listener.close()


@pytest.fixture(scope="module")
def proxy(dead_port, blackhole_port):
    with sc.upstreams("a") as ups:
        a = ups["a"].port

        def vhost(name, cluster, **route):
            return sc.virtual_host(name, [name], [sc.route(cluster, **route)])

        config = sc.bootstrap(
            listeners=[sc.listener("outbound", [
                vhost("dead-then-live", "dead-then-live",
                      retry=sc.retry_policy("connect-failure", num_retries=1)),
                vhost("retry-5xx", "a", retry=sc.retry_policy("5xx", num_retries=2,
                                                               base_interval=0.01)),
                vhost("per-try", "a", retry=sc.retry_policy("5xx", num_retries=1,
                                                            per_try_timeout=0.3)),
                vhost("retry-409", "a", retry=sc.retry_policy(
                    "retriable-status-codes", num_retries=1, base_interval=0.01,
                    retriable_status_codes=[409])),
                vhost("route-timeout", "a", timeout=0.5),
                vhost("blackhole", "blackhole"),
                vhost("other-host", "random-dead-live", retry=sc.retry_policy(
                    "connect-failure", num_retries=1, base_interval=0.01,
                    retry_host_predicate=[{"name": "envoy.retry_host_predicates.previous_hosts"}],
                    host_selection_retry_max_attempts=20)),
                vhost("any-host", "random-dead-live", retry=sc.retry_policy(
                    "connect-failure", num_retries=1, base_interval=0.01)),
            ])],
            clusters=[sc.cluster("a", [a]),
                      sc.cluster("dead-then-live", [dead_port, a]),
                      sc.cluster("blackhole", [blackhole_port], connect_timeout=0.25),
                      sc.cluster("random-dead-live", [dead_port, a], lb_policy="RANDOM")])
        with sc.start_sidecar(config) as sidecar:
            sidecar.upstream = ups["a"]
            yield sidecar


def get(proxy, host: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(kwargs.pop("method", "GET"), proxy.url(path),
                         headers={"host": host}, timeout=10, **kwargs)


def deltas(proxy, action, *names: str, **labels) -> dict:
    before = proxy.stats()
    action()
    after = proxy.stats()
    return {n: after.value(n, **labels) - before.value(n, **labels) for n in names}


def test_connect_failure_then_success_on_a_live_endpoint(proxy):
    codes = []
    d = deltas(proxy, lambda: codes.extend(get(proxy, "dead-then-live", "/echo").status_code
                                           for _ in range(10)),
               "plait_upstream_cx_connect_fail_total", "plait_upstream_rq_retry_total",
               "plait_upstream_rq_retry_success_total", cluster="dead-then-live")
    assert codes == [200] * 10
    # Round robin over [dead, live], retries included: 9 or 10 first tries hit the dead one.
    assert d["plait_upstream_cx_connect_fail_total"] >= 9
    assert d["plait_upstream_rq_retry_total"] == d["plait_upstream_cx_connect_fail_total"]
    assert d["plait_upstream_rq_retry_success_total"] == d["plait_upstream_rq_retry_total"]


def test_a_retry_avoids_the_host_that_failed_with_the_previous_hosts_predicate(proxy):
    # RANDOM over [dead, live]. With the predicate, a retry re-picks (up to 20 times)
    # until it is not the dead host: every request succeeds. Without it, a retry lands on
    # the dead host again half the time: about a quarter of the requests fail.
    n = 60
    avoiding = [get(proxy, "other-host", "/echo").status_code for _ in range(n)]
    anywhere = [get(proxy, "any-host", "/echo").status_code for _ in range(n)]
    assert avoiding == [200] * n
    assert set(anywhere) == {200, 503}  # all 200 would have odds of 0.75**60, about 3e-8


def test_503_is_retried_and_counted(proxy):
    k = key()
    replies = []
    d = deltas(proxy, lambda: replies.append(get(proxy, "retry-5xx", f"/flaky/{k}/2/status/503")),
               "plait_upstream_rq_retry_total", "plait_upstream_rq_retry_success_total",
               cluster="a")
    assert replies[0].status_code == 200 and replies[0].json()["path"].startswith("/flaky/")
    assert d == {"plait_upstream_rq_retry_total": 2, "plait_upstream_rq_retry_success_total": 1}


def test_a_retriable_status_code_below_500_is_retried_and_others_are_not(proxy):
    k = key()
    replies = []
    d = deltas(proxy, lambda: replies.extend([
        get(proxy, "retry-409", f"/flaky/{k}/1/status/409"),
        get(proxy, "retry-409", "/status/404"),
        get(proxy, "retry-409", "/status/500")]), "plait_upstream_rq_retry_total", cluster="a")
    assert [r.status_code for r in replies] == [200, 404, 500]
    assert d["plait_upstream_rq_retry_total"] == 1


def test_retries_run_out_and_the_last_answer_is_passed_on(proxy):
    replies = []
    d = deltas(proxy, lambda: replies.append(get(proxy, "retry-5xx", "/status/503")),
               "plait_upstream_rq_retry_total", cluster="a")
    assert replies[0].status_code == 503 and "x-plait-error" not in replies[0].headers
    assert replies[0].headers["x-upstream-name"] == "a"
    assert d["plait_upstream_rq_retry_total"] == 2


def test_a_chunked_body_is_replayed_on_retry(proxy):
    k = key()

    def pieces():
        yield b"abc"
        yield b"defg"

    reply = get(proxy, "retry-5xx", f"/flaky/{k}/1/status/503", method="POST",
                content=pieces())
    assert reply.status_code == 200
    assert reply.json()["body_length"] == 7 and ["transfer-encoding", "chunked"] in reply.json()[
        "headers"]


def test_per_try_timeout_then_a_fast_retry(proxy):
    k = key()
    replies = []
    d = deltas(proxy, lambda: replies.append(get(proxy, "per-try", f"/flaky/{k}/1/delay/3000")),
               "plait_upstream_rq_timeout_total", "plait_upstream_rq_retry_total", cluster="a")
    assert replies[0].status_code == 200
    assert d == {"plait_upstream_rq_timeout_total": 1, "plait_upstream_rq_retry_total": 1}


def test_body_over_the_retry_buffer_is_not_retried(proxy):
    small, large = key(), key()
    ok = get(proxy, "retry-5xx", f"/flaky/{small}/1/status/503", method="POST",
             content=b"s" * 10_000)
    assert ok.status_code == 200 and ok.json()["body_length"] == 10_000
    replies = []
    d = deltas(proxy, lambda: replies.append(get(
        proxy, "retry-5xx", f"/flaky/{large}/1/status/503", method="POST",
        content=b"L" * 200_000)), "plait_upstream_rq_retry_total", cluster="a")
    # 200 KB is over the 64 KiB retry buffer: the upstream's 503 goes back as it is.
    assert replies[0].status_code == 503 and replies[0].headers["x-upstream-name"] == "a"
    assert d["plait_upstream_rq_retry_total"] == 0


def test_route_timeout_is_504_upstream_timeout(proxy):
    replies = []
    d = deltas(proxy, lambda: replies.append(get(proxy, "route-timeout", "/delay/5000/echo")),
               "plait_upstream_rq_timeout_total", cluster="a")
    reply = replies[0]
    assert reply.status_code == 504
    assert reply.headers["x-plait-error"] == "upstream_timeout"
    assert reply.text == "upstream_timeout\n"
    assert d["plait_upstream_rq_timeout_total"] == 1


def test_connect_timeout_is_503_upstream_connect_failure(proxy):
    replies = []
    d = deltas(proxy, lambda: replies.append(get(proxy, "blackhole", "/echo")),
               "plait_upstream_cx_connect_timeout_total", cluster="blackhole")
    assert replies[0].status_code == 503
    assert replies[0].headers["x-plait-error"] == "upstream_connect_failure"
    assert d["plait_upstream_cx_connect_timeout_total"] == 1
