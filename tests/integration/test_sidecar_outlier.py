"""The failure-rate outlier rule through a real sidecar and three real upstreams: an
instance that fails every other request (so never enough in a row for the consecutive
rule) is ejected for its failure rate against the other two, takes no traffic while out,
and is back after the ejection time once it has healed.
"""

from __future__ import annotations

import httpx
import pytest

from plait.testing import sidecar as sc
from plait.testing.mesh import wait_until

pytestmark = pytest.mark.timeout(60)

NAMES = ("r1", "r2", "r3")
BASE_EJECTION = 3.0  # seconds: long enough for the checks made while it is out
WINDOW = 2.0


def config(ports: dict[str, int]) -> dict:
    # Envoy's fields: a floor of 20%, judged from 10 requests, with two hosts that many;
    # the consecutive rule stays on at 3 to show it does not catch this host. Plait's
    # metadata: twice the rest's rate, over a 2 s window.
    outlier = sc.outlier_detection(
        consecutive_5xx=3, base_ejection_time=BASE_EJECTION, max_ejection_percent=50,
        failure_percentage_threshold=20, failure_percentage_request_volume=10,
        failure_percentage_minimum_hosts=2, enforcing_failure_percentage=100)
    cluster = sc.cluster("rate", [ports[n] for n in NAMES], outlier_detection=outlier,
                         metadata=sc.failure_rate_metadata(ratio=2, window=WINDOW))
    listener = sc.listener("outbound", [sc.virtual_host("rate", ["*"], [sc.route("rate")])])
    return sc.bootstrap(listeners=[listener], clusters=[cluster])


@pytest.fixture
def ups():
    with sc.upstreams(*NAMES) as started:
        yield started


@pytest.fixture
def proxy(ups):
    with sc.start_sidecar(config({n: u.port for n, u in ups.items()})) as sidecar:
        yield sidecar


@pytest.fixture
def client():
    with httpx.Client(timeout=10) as c:
        yield c


def call(client: httpx.Client, proxy) -> tuple[int, str]:
    reply = client.get(proxy.url("/echo"), headers={"host": "rate"})
    return reply.status_code, reply.headers.get("x-upstream-name", "")


def ejections(proxy) -> tuple[float, float, float]:
    """(ejections, of which by the failure-rate rule, returns) of the cluster."""
    stats = proxy.stats()
    return (stats.value("plait_outlier_ejections_total", cluster="rate"),
            stats.value("plait_outlier_ejections_by_reason_total", cluster="rate",
                        reason="failure_rate"),
            stats.value("plait_outlier_returns_total", cluster="rate"))


def test_a_host_failing_every_other_request_is_ejected_avoided_and_returns(proxy, client,
                                                                           ups):
    ups["r2"].fail(500, every=2)
    trace: list[tuple[int, str]] = []

    def a_round_then_ejected() -> bool:
        trace.extend(call(client, proxy) for _ in NAMES)
        return ejections(proxy)[0] > 0

    try:
        wait_until(a_round_then_ejected, timeout=15, what="r2 ejected for its failure rate")
        assert ejections(proxy) == (1, 1, 0), "the failure-rate rule ejected it, nothing else"
        # enforced at 100%: found once, ejected that time
        assert proxy.stats().value("plait_outlier_ejections_detected_by_reason_total",
                                   cluster="rate", reason="failure_rate") == 1
        r2 = [code for code, name in trace if name == "r2"]
        # Round robin gave r2 a third of the calls, and it failed every other one of them:
        # never two in a row, so the consecutive rule (3) could not have caught it.
        assert r2[:4] == [500, 200, 500, 200], trace
        assert {(code, name) for code, name in trace if code != 200} == {(500, "r2")}
        assert len(r2) >= 10  # failure_percentage_request_volume

        # Out: the two healthy hosts take all the traffic, in turn.
        after = [call(client, proxy) for _ in range(30)]
        assert ejections(proxy)[2] == 0, "r2 came back before the checks ended"
    finally:
        ups["r2"].fail(0)
    assert {code for code, _ in after} == {200}, after
    names = [name for _, name in after]
    assert set(names) == {"r1", "r3"} and abs(names.count("r1") - 15) <= 1, names

    # Healed, it is back once the ejection time is up, judged afresh: its old failures
    # were cleared with the ejection, so it is not ejected again.
    wait_until(lambda: call(client, proxy)[1] == "r2", timeout=15,
               what="r2 answering again after its ejection")
    assert ejections(proxy) == (1, 1, 1)
    back = [call(client, proxy) for _ in range(30)]
    assert {code for code, _ in back} == {200}, back
    assert all(abs([name for _, name in back].count(n) - 10) <= 1 for n in NAMES), back
