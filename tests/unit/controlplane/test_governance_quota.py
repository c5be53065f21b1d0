"""Dividing a global rate limit among live instances (plait.controlplane.governance)."""

import pytest

from plait.controlplane.governance import burst_share, instance_index, quota_share
from plait.model.rate_limit import RateLimitRule


def rule(requests, *, scope="global", burst=None):
    return RateLimitRule(key="service", limit={"requests": requests, "per": "1s"},
                         burst=burst, scope=scope)


@pytest.mark.parametrize("instances", range(1, 8))
@pytest.mark.parametrize("requests", [7, 10, 100, 101, 1_000_003])
def test_shares_add_up_to_the_quota_and_differ_by_at_most_one(requests, instances):
    shares = [quota_share(rule(requests), instances, i) for i in range(instances)]
    assert sum(shares) == requests
    assert max(shares) - min(shares) <= 1
    assert min(shares) >= 1  # the quota is at least the instance count here
    assert shares == sorted(shares, reverse=True)  # the remainder goes to the first indices


def test_ten_among_three_and_four():
    assert [quota_share(rule(10), 3, i) for i in range(3)] == [4, 3, 3]
    assert [quota_share(rule(10), 4, i) for i in range(4)] == [3, 3, 2, 2]


def test_fewer_requests_than_instances_never_exceed_the_quota():
    shares = [quota_share(rule(3), 5, i) for i in range(5)]
    assert shares == [1, 1, 1, 0, 0]


def test_rebalancing_as_instances_come_and_go():
    ids = ["pricing-a", "pricing-b", "pricing-c"]
    def shares(live):
        out = {}
        for own in live:
            n, i = instance_index(live, own)
            out[own] = quota_share(rule(100), n, i)
        return out
    assert shares(ids) == {"pricing-a": 34, "pricing-b": 33, "pricing-c": 33}
    grown = shares([*ids, "pricing-0"])  # sorts first: every index moves, total holds
    assert grown == {"pricing-0": 25, "pricing-a": 25, "pricing-b": 25, "pricing-c": 25}
    shrunk = shares(["pricing-c", "pricing-a"])  # order given does not matter
    assert shrunk == {"pricing-a": 50, "pricing-c": 50}
    assert shares(["pricing-b"]) == {"pricing-b": 100}


def test_an_instance_not_yet_registered_gets_its_future_share():
    assert instance_index(["b", "d"], "c") == (3, 1)
    assert instance_index(["b", "d"], "d") == (2, 1)
    assert instance_index([], "a") == (1, 0)


def test_local_rules_are_not_divided():
    assert [quota_share(rule(10, scope="local"), 4, i) for i in range(4)] == [10] * 4
    assert burst_share(rule(10, scope="local", burst=3), 4, 2) == 3


def test_burst_is_divided_like_the_quota_and_never_below_one_request():
    assert [burst_share(rule(100, burst=10), 3, i) for i in range(3)] == [4, 3, 3]
    assert [burst_share(rule(100), 3, i) for i in range(3)] == [34, 33, 33]  # burst = requests
    # A tiny burst split among many: every instance that may admit keeps a bucket of 1.
    assert [burst_share(rule(100, burst=2), 4, i) for i in range(4)] == [1, 1, 1, 1]
    assert [burst_share(rule(2, burst=2), 4, i) for i in range(4)] == [1, 1, 0, 0]


@pytest.mark.parametrize("instances, index", [(0, 0), (3, 3), (3, -1), (-1, 0)])
def test_bad_arguments(instances, index):
    with pytest.raises(ValueError):
        quota_share(rule(10), instances, index)
    with pytest.raises(ValueError):
        quota_share(rule(10, scope="local"), instances, index)
