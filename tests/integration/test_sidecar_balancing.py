"""Load balancing across real upstreams: round robin spreads evenly, weights are honoured
and least request steers away from a slow host."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from plait.testing import sidecar as sc

pytestmark = pytest.mark.timeout(60)
NAMES = ("u1", "u2", "u3")


@pytest.fixture(scope="module")
def proxy():
    with sc.upstreams(*NAMES) as ups:
        ports = [ups[n].port for n in NAMES]
        config = sc.bootstrap(
            listeners=[sc.listener("outbound", [
                sc.virtual_host("rr", ["rr"], [sc.route("rr")]),
                sc.virtual_host("weighted", ["weighted"], [sc.route("weighted")]),
                sc.virtual_host("random", ["random"], [sc.route("random")]),
            ])],
            clusters=[sc.cluster("rr", ports),
                      sc.cluster("weighted", [("127.0.0.1", p, w)
                                              for p, w in zip(ports, (1, 2, 5))]),
                      sc.cluster("random", [("127.0.0.1", p, w)
                                            for p, w in zip(ports, (1, 1, 2))],
                                 lb_policy="RANDOM")])
        with sc.start_sidecar(config) as sidecar:
            yield sidecar


def spread(proxy, host: str, n: int, *, parallel: int = 1) -> dict[str, int]:
    """How many of `n` requests for `host` each upstream answered."""
    counts = dict.fromkeys(NAMES, 0)

    def one(client: httpx.Client) -> str:
        reply = client.get(proxy.url("/echo"), headers={"host": host})
        assert reply.status_code == 200
        return reply.headers["x-upstream-name"]

    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=parallel)) as client:
        if parallel == 1:
            names = [one(client) for _ in range(n)]
        else:
            with ThreadPoolExecutor(parallel) as pool:
                names = list(pool.map(lambda _: one(client), range(n)))
    for name in names:
        counts[name] += 1
    return counts


def test_round_robin_is_even(proxy):
    counts = spread(proxy, "rr", 150)
    # Round robin is exact up to the rare re-attempt of a pooled connection the upstream
    # closed (which moves the schedule on by one).
    assert all(abs(c - 50) <= 2 for c in counts.values()), counts


def test_weighted_round_robin_follows_the_weights(proxy):
    counts = spread(proxy, "weighted", 160, parallel=4)
    assert [counts[n] for n in NAMES] == pytest.approx([20, 40, 100], abs=4), counts


def test_random_follows_the_weights_within_tolerance(proxy):
    n = 400
    counts = spread(proxy, "random", n, parallel=4)
    for name, p in zip(NAMES, (0.25, 0.25, 0.5)):
        assert abs(counts[name] - n * p) <= 4 * math.sqrt(n * p * (1 - p)), counts
