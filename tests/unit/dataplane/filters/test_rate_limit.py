"""The rate limit filter: token buckets on an injected clock, bucket keys, the bounded key
map, answers, and the config it accepts."""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from plait.core.errors import ConfigError, Reason
from plait.dataplane.filters import rate_limit as rl
from plait.dataplane.filters.typed_struct import TypedStruct
from plait.testing.clock import FakeClock
from plait.testing.exchange import FakeExchange


def config(*rules: dict) -> rl.RateLimitConfig:
    msg = TypedStruct(type_url=rl.TYPE_URL)
    json_format.ParseDict({"rules": list(rules)}, msg.value)
    return rl.compile_config(msg, "cfg")


def rule(**fields) -> rl.RuleConfig:
    return config({"name": "r", "tokensPerFill": 10, "fillIntervalMs": 1000,
                   **fields}).rules[0]


def takes(buckets: rl.Buckets, r, now: float, n: int, key: bytes = b"") -> int:
    return sum(buckets.take(r, key, now) for _ in range(n))


def test_a_full_bucket_then_whole_fills():
    r = rule(maxTokens=15)
    b = rl.Buckets()
    assert takes(b, r, 0.0, 20) == 15  # starts full
    assert takes(b, r, 0.999, 5) == 0  # no fill before the interval
    assert takes(b, r, 1.0, 20) == 10  # one fill
    assert takes(b, r, 3.5, 30) == 15  # two fills, capped at maxTokens
    assert takes(b, r, 4.0, 30) == 10  # the half interval was kept: the fill came at 4.0


def test_the_long_run_rate_is_tokens_per_fill_per_interval():
    r = rule(tokensPerFill=3, fillIntervalMs=100, maxTokens=3)
    b = rl.Buckets()
    admitted = sum(b.take(r, b"", t / 1000.0) for t in range(0, 10_000, 7))  # 10 s
    assert admitted == 3 + 3 * 99  # the full bucket, then 3 at each fill (0.1 s .. 9.9 s)


def test_keys_have_their_own_buckets_and_the_map_is_bounded():
    r = rule(tokensPerFill=1, fillIntervalMs=60000)
    b = rl.Buckets(max_keys=3)
    for key in (b"a", b"b", b"c"):
        assert b.take(r, key, 0.0)
    assert not b.take(r, b"a", 0.0)  # a is spent, and now the most recently used
    assert b.take(r, b"d", 0.0)  # evicts b, the least recently used
    assert list(b.entries) == [b"c", b"a", b"d"]
    assert b.take(r, b"b", 0.0)  # b forgot it was spent: a fresh bucket


@given(st.integers(1, 3), st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]),
                                             st.integers(0, 700)), max_size=200))
def test_buckets_agree_with_a_plain_lru_model(max_keys, steps):
    # The model: every key's [tokens, last fill] in least-recently-used order, refilled
    # with whole intervals, the oldest key forgotten beyond max_keys.
    r = rule(tokensPerFill=2, fillIntervalMs=500, maxTokens=3)
    b = rl.Buckets(max_keys=max_keys)
    model: dict[bytes, list] = {}
    now = 0.0
    for key, gap_ms in steps:
        now += gap_ms / 1000
        bucket = model.pop(key, None)
        if bucket is None:
            if len(model) >= max_keys:
                del model[next(iter(model))]
            bucket = [r.max_tokens, now]
        fills = int((now - bucket[1]) / r.fill_interval)
        if fills > 0:
            bucket[0] = min(r.max_tokens, bucket[0] + fills * r.tokens_per_fill)
            bucket[1] += fills * r.fill_interval
        model[key] = bucket
        expected = bucket[0] >= 1
        bucket[0] -= expected
        assert b.take(r, key, now) == expected
        assert list(b.entries.items()) == list(model.items())


@pytest.mark.parametrize("key,headers,peer,expected", [
    ("service", [(b"x-plait-caller-app", b"shop")], b"10.0.0.1", b""),
    ("app", [(b"x-plait-caller-app", b"shop")], b"10.0.0.1", b"shop"),
    ("app", [], b"10.0.0.1", b""),
    ("caller", [(b"x-plait-caller", b"shop-7")], b"10.0.0.1", b"shop-7"),
    ("caller", [], b"10.0.0.9", b"10.0.0.9"),
    ("caller", [], None, b""),
    ("method", [], None, b"PUT"),
    ("header:X-User", [(b"x-user", b"ann")], None, b"ann"),
    ("header:X-User", [], None, b""),
])
def test_key_extraction(key, headers, peer, expected):
    ex = FakeExchange(method=b"PUT", headers=headers, peer=peer)
    assert rl.key_of(rule(key=key), ex) == expected


@given(st.sampled_from(["service", "app", "caller", "method", "header:X-User"]),
       st.lists(st.tuples(st.sampled_from([0, 1, 100, 250, 499, 500, 501, 1300]),
                          st.sampled_from([b"GET", b"PUT"]),
                          st.sampled_from([None, b"ann", b"bob"]),
                          st.sampled_from([None, b"10.0.0.1", b"10.0.0.2"])), max_size=150))
def test_the_filter_keys_and_takes_as_key_of_and_the_buckets_do(key, steps):
    # The filter finds the key and takes from the last bucket without calling key_of or
    # Buckets.take. Against a twin driven through those, on requests with and without
    # the keyed header, from other peers, over fills and empty buckets, every answer and
    # every bucket must agree. The gaps land on fill times exactly, now and then.
    clock = FakeClock(0.0)
    cfg = config({"name": "r", "key": key, "tokensPerFill": 2, "fillIntervalMs": 500,
                  "maxTokens": 3})
    f = rl.RateLimitFilter(cfg, clock=clock)
    r = cfg.rules[0]
    twin = rl.Buckets()
    for gap_ms, method, value, peer in steps:
        clock.advance(gap_ms / 1000)
        headers = [(b"host", b"svc")] + ([(r.header or b"x-user", value)] if value else [])
        ex = FakeExchange(method=method, headers=headers, peer=peer)
        assert f.on_request(ex) == twin.take(r, rl.key_of(r, ex), clock())
        assert list(f.states[r.state_key].entries.items()) == list(twin.entries.items())


def test_refused_requests_get_the_status_and_are_counted_and_evented():
    clock = FakeClock(50.0)
    f = rl.RateLimitFilter(config({"name": "r", "tokensPerFill": 2, "fillIntervalMs": 1000,
                                   "status": 503, "service": "pricing"}), clock=clock)
    first = FakeExchange()
    mgr = first.mgr
    results = [f.on_request(first)] + [f.on_request(FakeExchange(mgr=mgr)) for _ in range(3)]
    assert results == [True, True, False, False]
    refused = FakeExchange(mgr=mgr)
    f.on_request(refused)
    assert refused.replies == [("local", Reason.RATE_LIMITED, 503)]
    assert mgr.stats.labelled[("rate_limit_refused_total", "rule", "r")] == 3
    events = mgr.events.drain()["events"]
    assert [(e["type"], e["service"], e["detail"]) for e in events] == [
        ("rateLimited", "pricing", {"rule": "r", "count": 3})]
    clock.advance(1.0)
    assert f.on_request(FakeExchange(mgr=mgr))


def test_a_fallback_answers_instead():
    f = rl.RateLimitFilter(config({"name": "r", "tokensPerFill": 1, "fillIntervalMs": 1000,
                                   "fallback": {"status": 200, "body": "later"}}),
                           clock=FakeClock())
    assert f.on_request(FakeExchange())
    ex = FakeExchange()
    assert not f.on_request(ex)
    assert ex.replies == [("direct", 200, b"later", ((b"x-plait-error", b"rate_limited"),))]
    assert ex.reason is Reason.RATE_LIMITED


def test_every_covering_rule_takes_a_token_and_others_do_not():
    cfg = config({"name": "all", "tokensPerFill": 100, "fillIntervalMs": 1000},
                 {"name": "posts", "tokensPerFill": 1, "fillIntervalMs": 1000,
                  "match": {"method": "POST"}})
    f = rl.RateLimitFilter(cfg, clock=FakeClock())
    assert [f.on_request(FakeExchange(method=b"GET")) for _ in range(3)] == [True] * 3
    assert [f.on_request(FakeExchange(method=b"POST")) for _ in range(2)] == [True, False]
    assert f.states["all\0service"].entries[b""][0] == 100 - 5


def test_buckets_survive_a_push_and_a_route_config_wins():
    clock = FakeClock()
    listener = config({"name": "r", "tokensPerFill": 1, "fillIntervalMs": 60000})
    f = rl.RateLimitFilter(listener, clock=clock)
    assert f.on_request(FakeExchange())
    pushed = rl.RateLimitFilter(listener, clock=clock)
    pushed.adopt(f)
    assert not pushed.on_request(FakeExchange())
    roomy = config({"name": "route", "tokensPerFill": 5, "fillIntervalMs": 60000})
    assert pushed.on_request(FakeExchange(per_filter={rl.NAME: roomy}))


@pytest.mark.parametrize("fields,path", [
    ({"tokensPerFill": 1, "fillIntervalMs": 1000}, "cfg.value.rules[0].name"),
    ({"name": "r", "fillIntervalMs": 1000}, "cfg.value.rules[0].tokensPerFill"),
    ({"name": "r", "tokensPerFill": 0, "fillIntervalMs": 1000}, "cfg.value.rules[0].tokensPerFill"),
    ({"name": "r", "tokensPerFill": 1, "fillIntervalMs": 10}, "cfg.value.rules[0].fillIntervalMs"),
    ({"name": "r", "tokensPerFill": 1, "fillIntervalMs": 1000, "key": "user"},
     "cfg.value.rules[0].key"),
    ({"name": "r", "tokensPerFill": 1, "fillIntervalMs": 1000, "key": "header:"},
     "cfg.value.rules[0].key"),
    ({"name": "r", "tokensPerFill": 1, "fillIntervalMs": 1000, "status": 200},
     "cfg.value.rules[0].status"),
    ({"name": "r", "tokensPerFill": 1, "fillIntervalMs": 1000, "burst": 3},
     "cfg.value.rules[0].burst"),
    ({"name": "r", "tokensPerFill": 1, "fillIntervalMs": 1000, "match": {"verb": "GET"}},
     "cfg.value.rules[0].match.verb"),
])
def test_bad_config_names_the_field(fields, path):
    with pytest.raises(ConfigError) as info:
        config(fields)
    assert info.value.path == path


def test_rule_names_are_unique():
    r = {"name": "r", "tokensPerFill": 1, "fillIntervalMs": 1000}
    with pytest.raises(ConfigError) as info:
        config(r, r)
    assert info.value.path == "cfg.value.rules[1].name"
