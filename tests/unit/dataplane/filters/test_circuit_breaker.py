"""The circuit breaker filter: its sliding window, its state machine on an injected clock,
what it answers when open, and the config it accepts."""

from __future__ import annotations

import math

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from plait.core.errors import ConfigError, Reason
from plait.dataplane.filters import circuit_breaker as cb
from plait.dataplane.filters import rbac
from plait.dataplane.filters.typed_struct import TypedStruct
from plait.testing.clock import FakeClock
from plait.testing.exchange import FakeExchange


def config(*breakers: dict) -> cb.CircuitBreakerConfig:
    msg = TypedStruct(type_url=cb.TYPE_URL)
    json_format.ParseDict({"breakers": list(breakers)}, msg.value)
    return cb.compile_config(msg, "cfg")


def one(**fields) -> cb.BreakerConfig:
    return config({"name": "b", "openDurationMs": 1000, **fields}).breakers[0]


def add(w: cb.Window, now: float, error: bool, slow: bool) -> tuple[int, int, int]:
    """Count an outcome; the window's sums after it."""
    w.add(now, error, slow)
    return w.sum_total, w.sum_errors, w.sum_slow


def test_the_window_slides():
    w = cb.Window(1.0)  # ten buckets of 100 ms
    assert add(w, 0.00, True, False) == (1, 1, 0)
    assert add(w, 0.55, False, True) == (2, 1, 1)
    assert add(w, 0.99, False, False) == (3, 1, 1)
    assert add(w, 1.05, False, False) == (3, 0, 1)  # the first bucket [0, 0.1) left
    assert add(w, 3.00, True, False) == (1, 1, 0)


@given(st.floats(0, 1e6), st.lists(st.tuples(st.integers(0, 400), st.booleans(),
                                               st.booleans()), max_size=300))
def test_the_window_sums_are_those_of_the_outcomes_in_it(start, steps):
    # The running sums against a recount of every outcome of the last ten slices (a slice
    # being int(now / width), as Sentinel's), over gaps of up to four slices and bursts
    # within one, from any monotonic clock reading.
    w = cb.Window(1.0)
    seen, t_ms = [], 0
    for gap_ms, error, slow in steps:
        t_ms += gap_ms
        now = start + t_ms / 1000
        epoch = int(now / w.width)
        seen.append((epoch, error, slow))
        live = [(e, s) for ep, e, s in seen if ep > epoch - cb.BUCKETS]
        assert add(w, now, error, slow) == (len(live), sum(e for e, _ in live),
                                            sum(s for _, s in live))


def run(b: cb.Breaker, cfg, outcomes, at: float = 0.0):
    """Complete one PASS request per outcome (True = failed); the last transition."""
    last = None
    for failed in outcomes:
        assert b.admit(cfg, lambda: at) == cb.PASS
        last = b.complete(cfg, at, failed=failed, slow=False, probe=False, gen=b.gen) or last
    return last


def test_error_ratio_opens_above_the_threshold_after_min_requests():
    cfg = one(strategy="errorRatio", threshold=0.5, minRequests=4)
    b = cb.Breaker(cfg)
    assert run(b, cfg, [True, True, True]) is None  # 3 < minRequests
    assert run(b, cfg, [False]) is cb.State.OPEN  # 3 errors of 4: 0.75 > 0.5


def test_error_ratio_at_exactly_the_threshold_stays_closed():
    cfg = one(strategy="errorRatio", threshold=0.5, minRequests=4)
    b = cb.Breaker(cfg)
    run(b, cfg, [True, False, True, False])
    assert b.state is cb.State.CLOSED


def test_a_ratio_threshold_of_one_opens_when_everything_fails():
    cfg = one(strategy="errorRatio", threshold=1, minRequests=2)
    b = cb.Breaker(cfg)
    assert run(b, cfg, [True, True]) is cb.State.OPEN


def test_error_count_opens_above_the_count():
    cfg = one(strategy="errorCount", threshold=2, minRequests=1)
    b = cb.Breaker(cfg)
    assert run(b, cfg, [True, False, True]) is None
    assert run(b, cfg, [True]) is cb.State.OPEN


def test_old_errors_leave_the_window():
    cfg = one(strategy="errorCount", threshold=1, minRequests=1, statWindowMs=1000)
    b = cb.Breaker(cfg)
    run(b, cfg, [True], at=0.0)
    run(b, cfg, [True], at=1.5)  # the first error is out of the window by now
    assert b.state is cb.State.CLOSED


def test_open_then_half_open_probes_close_it():
    clock = FakeClock(100.0)
    cfg = one(strategy="errorCount", threshold=0, minRequests=1, openDurationMs=2000,
              halfOpenRequests=2)
    b = cb.Breaker(cfg)
    assert run(b, cfg, [True], at=clock()) is cb.State.OPEN
    clock.advance(1.999)
    assert b.admit(cfg, clock) == cb.REFUSE
    clock.advance(0.001)
    assert b.admit(cfg, clock) == cb.PROBE and b.state is cb.State.HALF_OPEN
    gen = b.gen
    assert b.admit(cfg, clock) == cb.PROBE
    assert b.admit(cfg, clock) == cb.REFUSE  # only halfOpenRequests probes
    ok = dict(failed=False, slow=False, probe=True, gen=gen)
    assert b.complete(cfg, clock(), **ok) is None
    assert b.complete(cfg, clock(), **ok) is cb.State.CLOSED
    assert b.admit(cfg, clock) == cb.PASS


def test_a_failed_probe_opens_it_again_and_late_outcomes_are_ignored():
    clock = FakeClock(0.0)
    cfg = one(strategy="errorRatio", threshold=0.1, minRequests=1, openDurationMs=1000)
    b = cb.Breaker(cfg)
    assert b.admit(cfg, clock) == cb.PASS
    stale = b.gen  # a request admitted while closed, still running when the breaker opens
    run(b, cfg, [True])
    clock.advance(1.0)
    assert b.admit(cfg, clock) == cb.PROBE
    late = b.complete(cfg, clock(), failed=False, slow=False, probe=False, gen=stale)
    assert late is None  # ignored
    failed = b.complete(cfg, clock(), failed=True, slow=False, probe=True, gen=b.gen)
    assert failed is cb.State.OPEN
    assert b.open_until == clock() + 1.0
    assert b.admit(cfg, clock) == cb.REFUSE


def test_slow_requests_open_a_slow_ratio_breaker_and_fail_its_probes():
    cfg = one(strategy="slowRequestRatio", threshold=0.5, slowRequestThresholdMs=100,
              minRequests=2)
    b = cb.Breaker(cfg)
    for slow in (True, True):
        b.admit(cfg, lambda: 0.0)
        change = b.complete(cfg, 0.0, failed=False, slow=slow, probe=False, gen=b.gen)
    assert change is cb.State.OPEN
    assert b.admit(cfg, lambda: 2.0) == cb.PROBE
    slow_probe = b.complete(cfg, 2.0, failed=False, slow=True, probe=True, gen=b.gen)
    assert slow_probe is cb.State.OPEN


def make_filter(*breakers, clock=None, listener=True):
    cfg = config(*breakers)
    f = cb.CircuitBreakerFilter(cfg if listener else None, clock=clock or FakeClock(0.0))
    return f, cfg


def test_the_filter_refuses_with_503_circuit_open_and_counts():
    clock = FakeClock(10.0)
    f, _ = make_filter({"name": "b", "strategy": "errorCount", "threshold": 0,
                        "minRequests": 1, "openDurationMs": 5000}, clock=clock)
    ex = FakeExchange(start=clock())
    assert f.on_request(ex)
    ex.finish(503, f)
    refused = FakeExchange(mgr=ex.mgr)
    assert not f.on_request(refused)
    assert refused.replies == [("local", Reason.CIRCUIT_OPEN, 0)]
    stats = ex.mgr.stats.labelled
    assert stats[("circuit_breaker_opened_total", "breaker", "b")] == 1
    assert stats[("circuit_breaker_rejected_total", "breaker", "b")] == 1
    events = ex.mgr.events.drain()["events"]
    assert [e["type"] for e in events] == ["breakerOpen"]
    assert events[0]["detail"]["breaker"] == "b"


def test_the_fallback_is_served_with_the_reason_and_evented_as_degrade():
    clock = FakeClock(0.0)
    f, _ = make_filter({"name": "b", "strategy": "errorCount", "threshold": 0,
                        "minRequests": 1, "openDurationMs": 5000, "service": "pricing",
                        "fallback": {"status": 200, "body": "cached",
                                     "headers": {"X-Degraded": "yes"}}}, clock=clock)
    ex = FakeExchange()
    f.on_request(ex)
    ex.finish(0, f)  # no response at all counts as an error
    degraded = FakeExchange(mgr=ex.mgr)
    assert not f.on_request(degraded)
    assert degraded.replies == [("direct", 200, b"cached", (
        (b"x-degraded", b"yes"), (b"x-plait-error", b"circuit_open")))]
    assert degraded.reason is Reason.CIRCUIT_OPEN
    drained = ex.mgr.events.drain()["events"]
    assert [(e["type"], e["service"]) for e in drained] == [("breakerOpen", "pricing"),
                                                            ("degrade", "pricing")]
    assert drained[1]["detail"] == {"rule": "b", "count": 1}


def test_only_matching_requests_count_and_are_refused():
    f, _ = make_filter({"name": "b", "strategy": "errorCount", "threshold": 0,
                        "minRequests": 1, "openDurationMs": 5000,
                        "match": {"method": "POST", "path": {"prefix": "/pay"},
                                  "headers": [{"name": "x-tenant", "value": "a"}],
                                  "caller": "shop"}})
    hit = dict(method=b"POST", target=b"/pay/1",
               headers=[(b"x-tenant", b"a"), (b"x-plait-caller-app", b"shop")])
    for other in (dict(hit, method=b"GET"), dict(hit, target=b"/other"),
                  dict(hit, headers=[(b"x-tenant", b"b"), (b"x-plait-caller-app", b"shop")]),
                  dict(hit, headers=[(b"x-tenant", b"a")])):
        ex = FakeExchange(**other)
        assert f.on_request(ex) and ex.filter_state is None
    ex = FakeExchange(**hit)
    assert f.on_request(ex)
    ex.finish(500, f)
    assert not f.on_request(FakeExchange(**hit))
    assert f.on_request(FakeExchange(**dict(hit, target=b"/other")))


def test_a_probe_refused_by_another_breaker_gives_its_place_back():
    clock = FakeClock(0.0)
    f, cfg = make_filter(
        {"name": "first", "strategy": "errorCount", "threshold": 0, "minRequests": 1,
         "openDurationMs": 1000},
        {"name": "second", "strategy": "errorCount", "threshold": 0, "minRequests": 1,
         "openDurationMs": 9000}, clock=clock)
    ex = FakeExchange()
    f.on_request(ex)
    ex.finish(503, f)  # both open
    clock.advance(1.0)  # first may probe, second is still open
    assert not f.on_request(FakeExchange(mgr=ex.mgr))
    first = f.states[cfg.breakers[0].state_key]
    assert first.state is cb.State.HALF_OPEN and first.probes == 0


def test_per_route_config_and_state_carried_across_a_push():
    clock = FakeClock(0.0)
    route_cfg = config({"name": "b", "strategy": "errorCount", "threshold": 0,
                        "minRequests": 1, "openDurationMs": 5000})
    f = cb.CircuitBreakerFilter(None, clock=clock)
    ex = FakeExchange(per_filter={cb.NAME: route_cfg})
    assert f.on_request(ex)
    ex.finish(502, f)
    pushed = cb.CircuitBreakerFilter(None, clock=clock)
    pushed.adopt(f)
    again = config({"name": "b", "strategy": "errorCount", "threshold": 3,
                    "minRequests": 1, "openDurationMs": 5000})  # same breaker, new threshold
    assert not pushed.on_request(FakeExchange(per_filter={cb.NAME: again}))
    assert f.on_request(FakeExchange())  # no listener config, no route config: passes


@pytest.mark.parametrize("breaker,path", [
    ({"strategy": "errorRatio", "threshold": 0.5}, "cfg.value.breakers[0].name"),
    ({"name": "b", "strategy": "errors", "threshold": 1}, "cfg.value.breakers[0].strategy"),
    ({"name": "b", "strategy": "errorRatio", "threshold": 1.5, "openDurationMs": 1},
     "cfg.value.breakers[0].threshold"),
    ({"name": "b", "strategy": "errorCount", "threshold": 1.5, "openDurationMs": 1},
     "cfg.value.breakers[0].threshold"),
    ({"name": "b", "strategy": "slowRequestRatio", "threshold": 0.5, "openDurationMs": 1},
     "cfg.value.breakers[0].slowRequestThresholdMs"),
    ({"name": "b", "strategy": "errorRatio", "threshold": 0.5},
     "cfg.value.breakers[0].openDurationMs"),
    ({"name": "b", "strategy": "errorRatio", "threshold": 0.5, "openDurationMs": 1,
      "match": {"path": {"exact": "/a", "prefix": "/b"}}}, "cfg.value.breakers[0].match.path"),
    ({"name": "b", "strategy": "errorRatio", "threshold": 0.5, "openDurationMs": 1,
      "fallback": {"status": 700}}, "cfg.value.breakers[0].fallback.status"),
    ({"name": "b", "strategy": "errorRatio", "threshold": 0.5, "openDurationMs": 1,
      "fallback": {"status": 200, "headers": {"content-length": "1"}}},
     "cfg.value.breakers[0].fallback.headers.content-length"),
    ({"name": "b", "strategy": "errorRatio", "threshold": 0.5, "openDurationMs": 1,
      "minRequest": 3}, "cfg.value.breakers[0].minRequest"),
])
def test_bad_config_names_the_field(breaker, path):
    with pytest.raises(ConfigError) as info:
        config(breaker)
    assert info.value.path == path


def test_the_type_url_is_checked():
    msg = TypedStruct(type_url="type.plait.io/something.else")
    with pytest.raises(ConfigError) as info:
        cb.compile_config(msg, "cfg")
    assert info.value.path == "cfg.type_url"


# -- the request path: the filter's own accounting against the breaker's -------------------

@given(st.floats(0.001, 360.0), st.integers(0, 10**12))
def test_a_slice_starts_where_dividing_by_the_width_says(width, epoch):
    # The window tells slices apart by comparing with this bound instead of dividing:
    # both must agree at the very edge, a float below it included.
    t = cb.slice_start(epoch, width)
    assert t / width >= epoch
    assert math.nextafter(t, -math.inf) / width < epoch


STRATEGIES = {
    "errorRatio": {"threshold": 0.5},
    "errorCount": {"threshold": 2},
    "slowRequestRatio": {"threshold": 0.5, "slowRequestThresholdMs": 100},
}
STEP = st.one_of(
    st.tuples(st.just("start"), st.integers(0, 400)),  # a request comes in, ms later
    st.tuples(st.just("finish"), st.integers(0, 400),  # the oldest in flight ends, ms later
              st.sampled_from([0, 200, 404, 500, 503])),
)


@given(st.sampled_from(sorted(STRATEGIES)), st.lists(STEP, max_size=120))
def test_the_filter_admits_counts_and_opens_as_the_breaker_does(strategy, steps):
    # The filter admits a closed breaker's requests and counts their outcomes without
    # calling Breaker.admit, Breaker.complete or Window.add. Against a twin Breaker driven
    # through those, on the same clock and requests (in flight across transitions too,
    # so late outcomes of an older state come up), every state, generation, probe count
    # and window sum must agree after every step.
    clock = FakeClock(100.0)
    f, cfg = make_filter({"name": "b", "strategy": strategy, "minRequests": 3,
                          "statWindowMs": 1000, "openDurationMs": 500, "halfOpenRequests": 2,
                          **STRATEGIES[strategy]}, clock=clock)
    b = cfg.breakers[0]
    twin = cb.Breaker(b)
    mgr = FakeExchange().mgr
    flying = []
    for step in steps:
        clock.advance(step[1] / 1000)
        if step[0] == "start":
            ex = FakeExchange(mgr=mgr, start=clock())
            verdict = twin.admit(b, clock)
            assert f.on_request(ex) == (verdict != cb.REFUSE)
            if verdict != cb.REFUSE:
                flying.append((ex, twin.gen, verdict == cb.PROBE))
        elif flying:
            ex, gen, probe = flying.pop(0)
            code = step[2]
            ex.finish(code, f)
            slow = b.slow_ratio and clock() - ex.t_start > b.slow_threshold
            twin.complete(b, clock(), failed=code == 0 or code >= 500, slow=slow, probe=probe,
                          gen=gen)
        ours = f.states.get(b.state_key)
        if ours is None:  # no request yet
            continue
        assert (ours.state, ours.gen, ours.probes, ours.passed, ours.open_until) == (
            twin.state, twin.gen, twin.probes, twin.passed, twin.open_until)
        w, t = ours.window, twin.window
        assert (w.sum_total, w.sum_errors, w.sum_slow) == (t.sum_total, t.sum_errors,
                                                           t.sum_slow)


def test_the_admission_is_kept_beside_another_filters_note():
    # Alone, a closed breaker's admission is the exchange's filter state itself; a note
    # from another filter (RBAC names the policy for the access log) then turns it into
    # a dict by filter name, and the outcome still reaches the breaker.
    f, cfg = make_filter({"name": "b", "strategy": "errorCount", "threshold": 0,
                          "minRequests": 1, "openDurationMs": 5000})
    ex = FakeExchange()
    assert f.on_request(ex)
    assert isinstance(ex.filter_state, tuple)
    rbac._note(ex, "audit")
    assert set(ex.filter_state) == {cb.NAME, rbac.NAME}
    ex.finish(500, f)
    assert f.states[cfg.breakers[0].state_key].state is cb.State.OPEN
    # And the other way round: the breaker after the note.
    f, cfg = make_filter({"name": "b", "strategy": "errorCount", "threshold": 0,
                          "minRequests": 1, "openDurationMs": 5000})
    ex = FakeExchange()
    rbac._note(ex, "audit")
    assert f.on_request(ex)
    assert ex.filter_state[rbac.NAME] == "audit"
    ex.finish(0, f)
    assert f.states[cfg.breakers[0].state_key].state is cb.State.OPEN
