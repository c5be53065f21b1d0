"""Traffic management through a real sidecar and real upstreams: matching, canary splits,
A/B routing, redirects, direct responses, header edits, rewrites, fault injection,
mirroring, the retry budget, outlier ejection, priority failover and consistent hashing.

One sidecar serves every scenario; the Host header picks the scenario's virtual host, and
each scenario that changes an upstream's behaviour (failing, slow, stopped) has upstreams
of its own. Shares (weights, fault percentages, mirror fraction, hash spread) are checked
within four standard deviations of a binomial for the sample size.
"""

from __future__ import annotations

import math
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import httpx
import pytest

from plait.testing import sidecar as sc

pytestmark = pytest.mark.timeout(90)

GENERAL = ("a", "b", "c")
OWN = ("shadow", "slowshadow", "failing", "o1", "o2", "o3", "p0", "p1")
FAULT = sc.FAULT


def within(count: int, n: int, p: float) -> bool:
    """`count` of `n` is within 4 standard deviations of a binomial(n, p)."""
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


def tag(name: str) -> dict:
    """Route fields that make the route say its name in a response header."""
    return {"response_headers_to_add": [sc.header_value("x-route", name, append=False)]}


def config(ports: dict[str, int], dead_port: int) -> dict:
    vhosts = [
        sc.virtual_host("match", ["match", "match.canary"], [
            sc.route("b", headers=[{"name": ":method", "exact_match": "POST"}], **tag("method")),
            sc.route("c", headers=[{"name": "x-tier", "exact_match": "gold"}], **tag("tier")),
            sc.route("b", headers=[{"name": "x-user", "string_match": {
                "suffix": "@example.com", "ignore_case": True}}], **tag("user")),
            sc.route("c", query=[{"name": "variant", "string_match": {"exact": "c"}}],
                     **tag("query")),
            sc.route("c", headers=[{"name": ":authority", "exact_match": "match.canary"}],
                     **tag("authority")),
            sc.route("b", regex="/items/[0-9]+", **tag("regex")),
            # nested repeats: exponential for a backtracking matcher, linear for RE2
            sc.route("c", regex="/(x+x+)+y", **tag("nested-path")),
            sc.route("c", headers=[{"name": "x-probe", "safe_regex_match": {"regex": "(a+)+$"}}],
                     **tag("nested-header")),
            sc.route("b", headers=[{"name": "x-debug", "present_match": True,
                                    "invert_match": True},
                                   {"name": "x-beta", "safe_regex_match": {"regex": "on|yes"}}],
                     **tag("beta")),
            sc.route("a", **tag("default")),
        ]),
        sc.virtual_host("canary", ["canary"], [sc.route(weighted={"a": 80, "b": 20})]),
        sc.virtual_host("ab", ["ab"], [
            sc.route("b", headers=[{"name": "x-group", "exact_match": "b"}]),
            sc.route("b", headers=[{"name": "cookie", "safe_regex_match": {
                "regex": "(.*;\\s*)?group=b(;.*)?"}}]),
            sc.route("a"),
        ]),
        sc.virtual_host("redirect", ["redirect"], [
            sc.redirect_route(path="/old", path_redirect="/new", response_code="FOUND"),
            sc.redirect_route(prefix="/http/", https_redirect=True,
                              host_redirect="secure.example", strip_query=True),
            sc.redirect_route(prefix="/moved/", prefix_rewrite="/here/", port_redirect=8443),
        ]),
        sc.virtual_host("direct", ["direct"], [
            sc.direct_route(200, "ok\n", path="/healthz"),
            {**sc.direct_route(503, "maintenance\n"), **tag("maintenance")},
        ]),
        {**sc.virtual_host("headers", ["headers"], [
            sc.route("a", request_headers_to_add=[
                sc.header_value("x-set", "route", append=False),
                sc.header_value("x-list", "added", append=True)],
                request_headers_to_remove=["x-secret"],
                response_headers_to_add=[sc.header_value("x-resp", "added", append=False)],
                response_headers_to_remove=["x-upstream-name"]),
        ]), "request_headers_to_add": [sc.header_value("x-vh", "vhost", append=False)]},
        sc.virtual_host("rewrite", ["rewrite"], [
            sc.route("a", prefix="/api/", action={
                "regex_rewrite": {"pattern": {"regex": "^/api/v([0-9]+)/(.*)$"},
                                  "substitution": "/v\\1/\\2"},
                "host_rewrite_literal": "backend.internal"}),
            sc.route("a", prefix="/old/", action={"prefix_rewrite": "/new/"}),
        ]),
        sc.virtual_host("fault", ["fault"], [
            sc.route("a", prefix="/override", per_filter={
                FAULT: sc.fault(abort_status=418, abort_percent=50)}),
            sc.route("a", prefix="/held", per_filter={FAULT: sc.fault(delay=2.0)}),
            sc.route("a"),
        ]),
        sc.virtual_host("mirror", ["mirror"], [
            sc.route("a", action={"request_mirror_policies": [sc.mirror("shadow", 50)]})]),
        sc.virtual_host("mirror-body", ["mirror-body"], [
            sc.route("a", action={"request_mirror_policies": [sc.mirror("shadow")]})]),
        sc.virtual_host("mirror-held", ["mirror-held"], [
            sc.route("a", action={"request_mirror_policies": [sc.mirror("shadow")]},
                     per_filter={FAULT: sc.fault(delay=0.2)})]),
        sc.virtual_host("mirror-slow", ["mirror-slow"], [
            sc.route("a", action={"request_mirror_policies": [sc.mirror("slowshadow")]})]),
        sc.virtual_host("mirror-dead", ["mirror-dead"], [
            sc.route("a", action={"request_mirror_policies": [sc.mirror("deadshadow")]})]),
        sc.virtual_host("budget", ["budget"], [
            sc.route("budget", retry=sc.retry_policy("5xx", num_retries=3,
                                                     base_interval=0.001))]),
        sc.virtual_host("outlier", ["outlier"], [sc.route("outlier")]),
        sc.virtual_host("prio", ["prio"], [sc.route("prio")]),
        sc.virtual_host("ring-header", ["ring-header"], [
            sc.route("ring", action={"hash_policy": [sc.hash_header("x-user")]})]),
        sc.virtual_host("ring-cookie", ["ring-cookie"], [
            sc.route("ring", action={"hash_policy": [sc.hash_cookie("session")]})]),
        sc.virtual_host("ring-query", ["ring-query"], [
            sc.route("ring", action={"hash_policy": [{"query_parameter": {"name": "user"}}]})]),
    ]
    clusters = [
        *(sc.cluster(n, [ports[n]]) for n in ("a", "b", "c", "shadow", "slowshadow")),
        sc.cluster("deadshadow", [dead_port]),
        sc.cluster("budget", [ports["failing"]], circuit_breakers=sc.retry_budget(
            budget_percent=20, min_retry_concurrency=1)),
        sc.cluster("outlier", [ports[n] for n in ("o1", "o2", "o3")],
                   outlier_detection=sc.outlier_detection(
                       consecutive_5xx=3, base_ejection_time=2, max_ejection_percent=50)),
        sc.cluster_by_priority("prio", [[ports["p0"]], [ports["p1"]]],
                               outlier_detection=sc.outlier_detection(
                                   consecutive_5xx=2, base_ejection_time=2)),
        sc.cluster("ring", [ports[n] for n in GENERAL], lb_policy="RING_HASH"),
    ]
    listener = sc.listener("outbound", vhosts, http_filters=[sc.fault_filter(
        abort_status=503, abort_percent=25, headers=[{"name": "x-chaos",
                                                      "present_match": True}])])
    return sc.bootstrap(listeners=[listener], clusters=clusters)


@pytest.fixture(scope="module")
def dead_port():
    # Bound but not listening: connections are refused, and no one else can take the port.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


@pytest.fixture(scope="module")
def ups():
    # Started one by one from this thread: a child started from a worker thread would be
    # killed when that thread ends (the launcher's parent-death signal follows the thread).
    started: dict[str, sc.Upstream] = {}
    try:
        for name in GENERAL + OWN:
            started[name] = sc.start_upstream(name)
        yield started
    finally:
        for up in started.values():
            up.stop()


@pytest.fixture(scope="module")
def proxy(ups, dead_port):
    ports = {name: up.port for name, up in ups.items()}
    ups["p0"].stop()  # priority 0 starts dead: its port refuses connections
    with sc.start_sidecar(config(ports, dead_port)) as sidecar:
        yield sidecar


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=10) as c:
        yield c


def call(client: httpx.Client, proxy, host: str, path: str = "/echo", *,
         method: str = "GET", headers: dict | None = None, **kwargs) -> httpx.Response:
    return client.request(method, proxy.url(path), headers={"host": host, **(headers or {})},
                          **kwargs)


def upstream_name(reply: httpx.Response) -> str:
    return reply.headers.get("x-upstream-name", "")


def poll(predicate, *, deadline: float, interval: float = 0.02, what: str = "condition"):
    """Call `predicate` until it returns something true or `deadline` seconds pass."""
    end = time.monotonic() + deadline
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < end, f"{what} not met within {deadline:g}s"
        time.sleep(interval)


# -- matching --------------------------------------------------------------------------------

@pytest.mark.parametrize("method,host,path,headers,route,upstream", [
    ("POST", "match", "/echo", {}, "method", "b"),
    ("GET", "match", "/echo", {"x-tier": "gold"}, "tier", "c"),
    ("GET", "match", "/echo", {"x-tier": "silver"}, "default", "a"),
    ("GET", "match", "/echo", {"x-user": "Ann@EXAMPLE.com"}, "user", "b"),
    ("GET", "match", "/echo", {"x-user": "ann@example.org"}, "default", "a"),
    ("GET", "match", "/echo?variant=c", {}, "query", "c"),
    ("GET", "match", "/echo?variant=cc", {}, "default", "a"),
    ("GET", "match.canary", "/echo", {}, "authority", "c"),
    ("GET", "match", "/items/42", {}, "regex", "b"),
    ("GET", "match", "/items/42/x", {}, "default", "a"),
    ("GET", "match", "/echo", {"x-beta": "yes"}, "beta", "b"),
    ("GET", "match", "/echo", {"x-beta": "yes", "x-debug": "1"}, "default", "a"),
    ("GET", "match", "/echo", {"x-beta": "maybe"}, "default", "a"),
    ("GET", "match", "/xxy", {}, "nested-path", "c"),
    ("GET", "match", "/echo", {"x-probe": "aaa"}, "nested-header", "c"),
    # hostile input for those two: a backtracking engine would not answer for hours
    ("GET", "match", "/" + "x" * 40, {}, "default", "a"),
    ("GET", "match", "/echo", {"x-probe": "a" * 40 + "!"}, "default", "a"),
])
def test_matching_picks_the_route_and_cluster(proxy, client, method, host, path, headers,
                                              route, upstream):
    reply = call(client, proxy, host, path, method=method, headers=headers)
    assert reply.status_code == 200
    assert (reply.headers["x-route"], upstream_name(reply)) == (route, upstream)


def test_canary_split_follows_the_weights(proxy, client):
    n = 400
    names = [upstream_name(call(client, proxy, "canary")) for _ in range(n)]
    assert set(names) <= {"a", "b"}
    assert within(names.count("b"), n, 0.2), names.count("b")


@pytest.mark.parametrize("headers,cookies,upstream", [
    ({"x-group": "b"}, None, "b"),
    ({}, {"group": "b"}, "b"),
    ({}, {"session": "s1", "group": "b", "theme": "dark"}, "b"),
    ({}, {"group": "bb"}, "a"),
    ({"x-group": "a"}, {"group": "a"}, "a"),
    ({}, None, "a"),
])
def test_ab_routing_by_header_and_cookie(proxy, client, headers, cookies, upstream):
    if cookies:
        headers = {**headers, "cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
    replies = [call(client, proxy, "ab", headers=headers) for _ in range(5)]
    assert [(r.status_code, upstream_name(r)) for r in replies] == [(200, upstream)] * 5


# -- answers from the sidecar itself ---------------------------------------------------------

@pytest.mark.parametrize("path,status,location", [
    ("/old?x=1", 302, "http://redirect/new?x=1"),
    ("/http/page?secret=1", 301, "https://secure.example/http/page"),
    ("/moved/x?q=1", 301, "http://redirect:8443/here/x?q=1"),
])
def test_redirects(proxy, client, ups, path, status, location):
    before = sum(ups[n].count()["requests"] for n in GENERAL)
    reply = call(client, proxy, "redirect", path)
    assert (reply.status_code, reply.headers["location"]) == (status, location)
    assert reply.content == b""
    assert sum(ups[n].count()["requests"] for n in GENERAL) == before  # no upstream asked


def test_redirect_with_no_matching_route_is_404(proxy, client):
    reply = call(client, proxy, "redirect", "/elsewhere")
    assert reply.status_code == 404 and reply.headers["x-plait-error"] == "no_route"


def test_direct_responses(proxy, client):
    ok = call(client, proxy, "direct", "/healthz")
    assert (ok.status_code, ok.text) == (200, "ok\n")
    down = call(client, proxy, "direct", "/anything")
    assert (down.status_code, down.text, down.headers["x-route"]) == (
        503, "maintenance\n", "maintenance")
    head = call(client, proxy, "direct", "/healthz", method="HEAD")
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "3")


# -- what reaches the upstream ---------------------------------------------------------------

def test_request_and_response_header_edits(proxy, client):
    reply = call(client, proxy, "headers", headers={
        "x-set": "client", "x-list": "client", "x-secret": "s3cret", "x-vh": "client"})
    assert reply.status_code == 200
    seen = reply.json()["headers"]
    values = {name: [v for n, v in seen if n == name]
              for name in ("x-set", "x-list", "x-secret", "x-vh")}
    assert values == {"x-set": ["route"], "x-list": ["client", "added"], "x-secret": [],
                      "x-vh": ["vhost"]}
    assert reply.headers["x-resp"] == "added"
    assert "x-upstream-name" not in reply.headers
    assert reply.json()["name"] == "a"


def test_regex_rewrite_and_host_rewrite(proxy, client):
    seen = call(client, proxy, "rewrite", "/api/v2/users/7?full=1&path=/api/v3/").json()
    assert seen["path"] == "/v2/users/7?full=1&path=/api/v3/"
    assert [v for n, v in seen["headers"] if n == "host"] == ["backend.internal"]
    assert call(client, proxy, "rewrite", "/old/x?y=1").json()["path"] == "/new/x?y=1"


# -- fault injection -------------------------------------------------------------------------

def test_fault_abort_share_at_the_listener(proxy, client):
    before = proxy.stats().value("plait_fault_aborts_total", listener="outbound")
    n = 400
    replies = [call(client, proxy, "fault", headers={"x-chaos": "1"}) for _ in range(n)]
    aborted = [r for r in replies if r.status_code != 200]
    assert all(r.status_code == 503 and r.headers["x-plait-error"] == "fault_abort"
               for r in aborted)
    assert within(len(aborted), n, 0.25), len(aborted)
    after = proxy.stats().value("plait_fault_aborts_total", listener="outbound")
    assert after - before == len(aborted)
    # The listener's fault only applies to requests that carry x-chaos.
    assert {call(client, proxy, "fault").status_code for _ in range(50)} == {200}


def test_a_route_fault_replaces_the_listeners(proxy, client):
    n = 400
    codes = [call(client, proxy, "fault", "/override", headers={"x-chaos": "1"}).status_code
             for _ in range(n)]
    assert set(codes) <= {200, 418}  # never the listener's 503
    assert within(codes.count(418), n, 0.5), codes.count(418)


def test_fault_delay_holds_the_request_at_the_sidecar(proxy, client, ups):
    before = proxy.stats().value("plait_fault_delays_total", listener="outbound")
    served = ups["a"].count()["requests"]
    with ThreadPoolExecutor(1) as pool, httpx.Client(timeout=10) as own:
        pending = pool.submit(call, own, proxy, "fault", "/held/echo")
        with pytest.raises(FutureTimeout):
            pending.result(timeout=0.5)  # still held (the delay is 2 s)
        assert ups["a"].count()["requests"] == served  # held here, not at the upstream
        assert proxy.stats().value("plait_fault_delays_total", listener="outbound") == (
            before + 1)
        reply = pending.result(timeout=10)
    assert reply.status_code == 200 and reply.json()["path"] == "/held/echo"
    assert ups["a"].count()["requests"] == served + 1


# -- mirroring -------------------------------------------------------------------------------

def mirror_stats(proxy, cluster: str) -> tuple[float, float]:
    stats = proxy.stats()
    return (stats.value("plait_upstream_rq_mirror_total", cluster=cluster),
            stats.value("plait_upstream_rq_mirror_failed_total", cluster=cluster))


def test_mirror_gets_its_share_with_a_shadow_authority(proxy, client, ups):
    before = ups["shadow"].count()
    sent_before, _ = mirror_stats(proxy, "shadow")
    n = 400
    codes = {call(client, proxy, "mirror").status_code for _ in range(n)}
    assert codes == {200}
    sent, failed = mirror_stats(proxy, "shadow")
    mirrored = sent - sent_before
    assert failed == 0
    # Shadow requests are fire-and-forget: wait until the shadow has seen all of them.
    seen = poll(lambda: (c := ups["shadow"].count())["requests"] >= before["requests"] + mirrored
                and c, deadline=10, what="all mirrored requests reaching the shadow")
    assert seen["requests"] - before["requests"] == mirrored
    new = {k: v - before["authorities"].get(k, 0) for k, v in seen["authorities"].items()}
    assert {k: v for k, v in new.items() if v} == {"mirror-shadow": mirrored}
    assert within(int(mirrored), n, 0.5), mirrored


def test_requests_with_a_body_are_mirrored_whole(proxy, client, ups):
    before = ups["shadow"].count()
    fixed = [call(client, proxy, "mirror-body", method="POST", content=b"x" * 5000)
             for _ in range(10)]
    chunked = [call(client, proxy, "mirror-body", method="POST",
                    content=iter([b"a" * 300, b"b" * 700])) for _ in range(10)]
    # A fault delay holds these while their bodies come in: the copy goes out after it.
    held = [call(client, proxy, "mirror-held", method="POST", content=b"z" * 2000)
            for _ in range(5)]
    assert [r.json()["body_length"] for r in fixed + chunked + held] == (
        [5000] * 10 + [1000] * 10 + [2000] * 5)
    # The shadow counts a request only once it has parsed the whole of it.
    seen = poll(lambda: (c := ups["shadow"].count())["requests"] >= before["requests"] + 25
                and c, deadline=10, what="every copy reaching the shadow")
    assert seen["requests"] - before["requests"] == 25
    assert seen["authorities"].get("mirror-body-shadow", 0) == 20
    assert seen["authorities"].get("mirror-held-shadow", 0) == 5


def test_a_slow_mirror_does_not_slow_the_caller(proxy, ups):
    ups["slowshadow"].delay(4000)
    try:
        # The caller's own timeout is shorter than the shadow's delay: a caller that waited
        # for its shadow would time out here.
        with httpx.Client(timeout=httpx.Timeout(1.5)) as quick:
            codes = [call(quick, proxy, "mirror-slow").status_code for _ in range(20)]
        assert codes == [200] * 20
        assert mirror_stats(proxy, "slowshadow") == (20, 0)
        poll(lambda: ups["slowshadow"].count()["requests"] == 20, deadline=10,
             what="the slow shadow receiving every copy")
    finally:
        ups["slowshadow"].delay(0)


def test_a_dead_mirror_does_not_fail_the_caller(proxy, client):
    codes = [call(client, proxy, "mirror-dead").status_code for _ in range(20)]
    assert codes == [200] * 20
    poll(lambda: mirror_stats(proxy, "deadshadow") == (20, 20), deadline=10,
         what="every copy to the dead shadow counted as failed")


# -- retry budget ----------------------------------------------------------------------------

def test_retry_budget_caps_retries_to_a_failing_upstream(proxy, client, ups):
    failing = ups["failing"]
    failing.fail(503)
    n = 200
    served = failing.count()["requests"]
    stats = proxy.stats()
    retried = stats.value("plait_upstream_rq_retry_total", cluster="budget")
    exhausted = stats.value("plait_upstream_rq_retry_budget_exhausted_total", cluster="budget")
    start = time.monotonic()
    codes = [call(client, proxy, "budget").status_code for _ in range(n)]
    elapsed = time.monotonic() - start
    assert codes == [503] * n
    retries = failing.count()["requests"] - served - n
    stats = proxy.stats()
    assert stats.value("plait_upstream_rq_retry_total", cluster="budget") - retried == retries
    # Within one 10 s window the budget is 20% of the requests plus 1/s x 10 s; each further
    # window the requests span adds one more floor. (Not a timing assertion: the elapsed
    # time only decides how many windows the bound must allow for.)
    windows = 1 + int(elapsed // 9.5)
    assert 10 <= retries <= math.ceil(0.2 * n + 10 * windows), (retries, elapsed)
    if windows == 1:
        assert retries >= 0.2 * n + 10 - 2
    # Without a budget the upstream would have seen 3 retries per request.
    denied = stats.value("plait_upstream_rq_retry_budget_exhausted_total",
                         cluster="budget") - exhausted
    assert denied >= n - retries / 3


# -- outlier detection -----------------------------------------------------------------------

def outlier_stats(proxy, cluster: str) -> tuple[float, float]:
    stats = proxy.stats()
    return (stats.value("plait_outlier_ejections_total", cluster=cluster),
            stats.value("plait_outlier_returns_total", cluster=cluster))


def test_a_failing_host_is_ejected_avoided_and_returns(proxy, client, ups):
    ups["o2"].fail(500)
    try:
        replies = [call(client, proxy, "outlier") for _ in range(30)]
        ejected_at_end = outlier_stats(proxy, "outlier")
    finally:
        ups["o2"].fail(0)
    trace = [(r.status_code, upstream_name(r)) for r in replies]
    failures = [i for i, (code, _) in enumerate(trace) if code != 200]
    assert all(trace[i] == (500, "o2") for i in failures), trace
    assert len(failures) == 3, trace  # consecutive_5xx: exactly what detection needs
    assert all(name != "o2" for _, name in trace[failures[-1] + 1:]), trace
    assert ejected_at_end == (1, 0)  # ejected, and not back before the burst ended
    # base_ejection_time is 2 s: it comes back, healthy now, and takes its turn again.
    poll(lambda: upstream_name(call(client, proxy, "outlier")) == "o2", deadline=15,
         what="o2 answering again after its ejection")
    assert outlier_stats(proxy, "outlier") == (1, 1)
    names = [upstream_name(call(client, proxy, "outlier")) for _ in range(30)]
    assert abs(names.count("o2") - 10) <= 1, names  # round robin over all three again


# -- locality priority failover ----------------------------------------------------------------

def test_priority_failover_and_back(proxy, client, ups):
    replies = [call(client, proxy, "prio") for _ in range(20)]
    trace = [(r.status_code, r.headers.get("x-plait-error", upstream_name(r)))
             for r in replies]
    # Priority 0 is dead: its connection failures count as 5xx; after two it is ejected
    # and priority 1 takes all the traffic.
    assert trace[:2] == [(503, "upstream_connect_failure")] * 2, trace
    assert trace[2:] == [(200, "p1")] * 18, trace
    assert outlier_stats(proxy, "prio")[0] == 1
    ups["p0"] = sc.start_upstream("p0", port=ups["p0"].port)
    poll(lambda: upstream_name(call(client, proxy, "prio")) == "p0", deadline=15,
         what="traffic returning to priority 0")
    names = [upstream_name(call(client, proxy, "prio")) for _ in range(20)]
    assert names == ["p0"] * 20


# -- consistent hashing ----------------------------------------------------------------------

def test_ring_hash_on_a_header_is_sticky_and_spread(proxy, client):
    keys = [f"user-{i}" for i in range(200)]
    first = {k: upstream_name(call(client, proxy, "ring-header", headers={"x-user": k}))
             for k in keys}
    again = {k: upstream_name(call(client, proxy, "ring-header", headers={"x-user": k}))
             for k in keys}
    assert first == again
    counts = {n: list(first.values()).count(n) for n in GENERAL}
    assert sum(counts.values()) == len(keys)
    # The ring's shares are themselves near 1/3 (about 340 points per host), well inside
    # this tolerance.
    assert all(within(c, len(keys), 1 / 3) for c in counts.values()), counts


def test_ring_hash_on_a_cookie_is_sticky(proxy, client):
    keys = [f"s{i}" for i in range(60)]
    picks = {}
    for _ in range(3):
        for k in keys:
            reply = call(client, proxy, "ring-cookie", headers={"cookie": f"a=1; session={k}"})
            picks.setdefault(k, set()).add(upstream_name(reply))
    assert all(len(names) == 1 for names in picks.values()), picks
    assert len({next(iter(names)) for names in picks.values()}) == 3  # keys do spread


def test_ring_hash_on_a_query_parameter_is_sticky(proxy, client):
    keys = [f"u{i}" for i in range(60)]
    picks = {}
    for k in keys:  # the first `user` decides; other parameters and a second `user` do not
        for query in (f"user={k}", f"a=1&user={k}", f"user={k}&user=other&b"):
            reply = call(client, proxy, "ring-query", f"/echo?{query}")
            picks.setdefault(k, set()).add(upstream_name(reply))
    assert all(len(names) == 1 for names in picks.values()), picks
    assert len({next(iter(names)) for names in picks.values()}) == 3  # keys do spread
