"""The plait.io kinds: what they accept, what they mean, and the path of every refusal."""

import copy

import pytest
import yaml

from plait.core.errors import ConfigError
from plait.model import parse_documents, parse_resource, resolve_kind, to_dict
from plait.model.alarm_rule import AlarmRule
from plait.model.circuit_breaker import CircuitBreaker
from plait.model.degrade import Degrade
from plait.model.failure_rate_ejection import FailureRateEjection
from plait.model.health_check import HealthCheck
from plait.model.rate_limit import RateLimit

DOCS = yaml.safe_load_all("""
apiVersion: plait.io/v1alpha1
kind: RateLimit
metadata: {name: pricing, namespace: shop}
spec:
  service: pricing
  match:
    method: GET
    path: {prefix: /api/}
    header: {name: x-tenant, value: gold}
    caller: web
  rules:
  - key: service
    limit: {requests: 100, per: 1s}
    burst: 20
    scope: global
  - key: header:x-user
    limit: {requests: 1000, per: 1m}
    response: {status: 503}
---
apiVersion: plait.io/v1alpha1
kind: CircuitBreaker
metadata: {name: pricing}
spec:
  service: pricing
  match: {path: {exact: /quote}}
  strategy: slowRequestRatio
  threshold: 0.5
  slowRequestThreshold: 200ms
  openDuration: 10s
---
apiVersion: plait.io/v1alpha1
kind: Degrade
metadata: {name: pricing}
spec:
  service: pricing
  when: [circuitOpen, rateLimited]
  fallback:
    status: 200
    headers: {content-type: application/json}
    body: '{"price": null}'
---
apiVersion: plait.io/v1alpha1
kind: AlarmRule
metadata: {name: pricing-errors}
spec:
  errorRate: {service: pricing, threshold: 0.2, window: 30s, minRequests: 50}
  webhook: {url: "https://hooks.example.com/plait", headers: {authorization: Bearer x}}
  cooldown: 5m
---
apiVersion: plait.io/v1alpha1
kind: HealthCheck
metadata: {name: pricing}
spec:
  host: pricing
  subset: v2
  http:
    path: /healthz
    host: pricing.internal:8080
    expectedStatuses: [{start: 200, end: 300}, {start: 418, end: 419}]
  interval: 2s
  timeout: 500ms
  unhealthyThreshold: 3
  healthyThreshold: 2
""")
RL, CB, DG, AR, HC = list(DOCS)


def with_(doc, path, value):
    """A copy of `doc` with the dotted `path` set (None deletes)."""
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return out


def refusal(doc):
    with pytest.raises(ConfigError) as info:
        parse_resource(doc)
    return info.value.path, info.value.reason


def test_the_kinds_parse_with_their_defaults():
    rl, cb, dg, ar = (parse_resource(d) for d in (RL, CB, DG, AR))
    assert isinstance(rl, RateLimit) and rl.metadata.namespace == "shop"
    assert rl.spec.match.header.value == "gold" and rl.spec.match.caller == "web"
    first, second = rl.spec.rules
    assert (first.scope, first.bucket_size, first.response.status) == ("global", 20, 429)
    assert (second.scope, second.bucket_size, second.response.status) == ("local", 1000, 503)
    assert second.limit.per_seconds == 60
    assert isinstance(cb, CircuitBreaker)
    assert (cb.spec.min_requests, cb.spec.stat_window, cb.spec.half_open_requests) == (5, "1s", 1)
    assert isinstance(dg, Degrade) and dg.spec.fallback.headers == {"content-type": "application/json"}
    assert isinstance(ar, AlarmRule) and ar.spec.error_rate.min_requests == 50
    assert ar.spec.events is None


def test_round_trip_and_yaml_documents():
    for doc in (RL, CB, DG, AR, HC, TCP_CHECK):
        resource = parse_resource(doc)
        assert parse_resource(to_dict(resource)) == resource
        assert to_dict(resource)["apiVersion"] == "plait.io/v1alpha1"
    text = "---\n".join(yaml.safe_dump(d) for d in (RL, CB, DG, AR, HC))
    assert [r.kind for r in parse_documents(text)] == [
        "RateLimit", "CircuitBreaker", "Degrade", "AlarmRule", "HealthCheck"]


@pytest.mark.parametrize("text, kind", [
    ("rl", "RateLimit"), ("ratelimits", "RateLimit"), ("cb", "CircuitBreaker"),
    ("CircuitBreakers", "CircuitBreaker"), ("degrade", "Degrade"), ("degrades", "Degrade"),
    ("alarm", "AlarmRule"), ("alarmrules", "AlarmRule"), ("hc", "HealthCheck"),
    ("healthchecks", "HealthCheck"), ("HealthCheck", "HealthCheck"),
    ("fre", "FailureRateEjection"), ("failurerateejections", "FailureRateEjection"),
])
def test_short_names(text, kind):
    assert resolve_kind(text) == kind


def test_istio_api_version_is_not_a_plait_one():
    assert refusal(with_(RL, "apiVersion", "networking.istio.io/v1")) == (
        "apiVersion", "Input should be 'plait.io/v1alpha1'")


@pytest.mark.parametrize("path, value, where, reason", [
    ("spec.rules.0.key", "user", "spec.rules[0].key", "unknown key 'user'"),
    ("spec.rules.0.key", "header:x user", "spec.rules[0].key", "a header name must be an HTTP token"),
    ("spec.rules.0.limit.per", "10ms", "spec.rules[0].limit.per", "must be at least 50ms"),
    ("spec.rules.0.limit.per", "soon", "spec.rules[0].limit.per", "invalid duration 'soon'"),
    ("spec.rules.0.limit.requests", 0, "spec.rules[0].limit.requests", "greater than or equal to 1"),
    ("spec.rules.0.burst", 0, "spec.rules[0].burst", "greater than or equal to 1"),
    ("spec.rules.0.scope", "cluster", "spec.rules[0].scope", "Input should be 'local' or 'global'"),
    ("spec.rules.1.response.status", 200, "spec.rules[1].response.status", "greater than or equal to 400"),
    ("spec.rules", [], "spec.rules", "at least 1 item"),
    ("spec.match.path", {"exact": "/a", "prefix": "/"}, "spec.match.path", "set exactly one of exact, prefix"),
    ("spec.match.path", {"prefix": "api"}, "spec.match.path.prefix", "String should match pattern"),
    ("spec.match.method", "get", "spec.match.method", "upper-case token"),
    ("spec.match.header.value", "a\r\nb", "spec.match.header.value", "must not contain CR, LF or NUL"),
    ("spec.match.regex", "x", "spec.match.regex", "unknown field"),
    ("spec.service", None, "spec.service", "required field is missing"),
])
def test_rate_limit_refusals(path, value, where, reason):
    got_path, got_reason = refusal(with_(RL, path, value))
    assert got_path == where and reason in got_reason


def test_rate_limit_rule_written_twice():
    doc = with_(RL, "spec.rules.1", {"key": "service", "limit": {"requests": 5, "per": "1000ms"}})
    assert refusal(doc) == ("spec.rules[1]",
                            "same key 'service' and period as spec.rules[0]; merge them")


@pytest.mark.parametrize("changes, where, reason", [
    ({"spec.strategy": "errorCount", "spec.slowRequestThreshold": None},
     "spec.threshold", "with strategy errorCount, a whole number of at least 1"),
    ({"spec.strategy": "errorRatio", "spec.threshold": 1.5, "spec.slowRequestThreshold": None},
     "spec.threshold", "with strategy errorRatio, a ratio above 0 and at most 1"),
    ({"spec.threshold": 0}, "spec.threshold", "with strategy slowRequestRatio, a ratio"),
    ({"spec.slowRequestThreshold": None}, "spec.slowRequestThreshold",
     "required with strategy slowRequestRatio"),
    ({"spec.strategy": "errorRatio"}, "spec.slowRequestThreshold",
     "only used with strategy slowRequestRatio"),
    ({"spec.strategy": "latency"}, "spec.strategy", "Input should be 'slowRequestRatio'"),
    ({"spec.openDuration": "0s"}, "spec.openDuration", "must be longer than 0"),
    ({"spec.openDuration": None}, "spec.openDuration", "required field is missing"),
    ({"spec.statWindow": "-1s"}, "spec.statWindow", "invalid duration"),
    ({"spec.halfOpenRequests": 0}, "spec.halfOpenRequests", "greater than or equal to 1"),
    ({"spec.minRequests": 0}, "spec.minRequests", "greater than or equal to 1"),
    ({"spec.match.header": {"name": "x"}}, "spec.match.header", "unknown field"),
])
def test_circuit_breaker_refusals(changes, where, reason):
    doc = CB
    for path, value in changes.items():
        doc = with_(doc, path, value)
    got_path, got_reason = refusal(doc)
    assert got_path == where and reason in got_reason


def test_circuit_breaker_error_count():
    doc = with_(with_(CB, "spec.strategy", "errorCount"), "spec.slowRequestThreshold", None)
    assert parse_resource(with_(doc, "spec.threshold", 5)).spec.threshold == 5


@pytest.mark.parametrize("path, value, where, reason", [
    ("spec.when", [], "spec.when", "at least 1 item"),
    ("spec.when", ["circuitOpen", "timeout"], "spec.when[1]", "Input should be 'circuitOpen'"),
    ("spec.when", ["rateLimited", "rateLimited"], "spec.when[1]", "'rateLimited' is listed twice"),
    ("spec.fallback.status", 700, "spec.fallback.status", "less than or equal to 599"),
    ("spec.fallback.status", None, "spec.fallback.status", "required field is missing"),
    ("spec.fallback.headers", {"bad name": "x"}, "spec.fallback.headers['bad name'](key)", "HTTP token"),
    ("spec.fallback.headers", {"X-A": "1", "x-a": "2"}, "spec.fallback.headers.x-a", "names ignore case"),
    ("spec.fallback.body", "x" * 70000, "spec.fallback.body", "at most 65536 characters"),
])
def test_degrade_refusals(path, value, where, reason):
    got_path, got_reason = refusal(with_(DG, path, value))
    assert got_path == where and reason in got_reason


EVENTS_RULE = with_(with_(AR, "spec.errorRate", None), "spec.events",
                    {"types": ["ejection", "breakerOpen"], "service": "pricing"})


@pytest.mark.parametrize("doc, path, value, where, reason", [
    (AR, "spec.errorRate.threshold", 0, "spec.errorRate.threshold", "greater than 0"),
    (AR, "spec.errorRate.threshold", 1.2, "spec.errorRate.threshold", "less than or equal to 1"),
    (AR, "spec.errorRate.window", "2h", "spec.errorRate.window", "must be at most 1h"),
    (AR, "spec.errorRate.window", "0s", "spec.errorRate.window", "must be longer than 0"),
    (AR, "spec.errorRate.minRequests", 0, "spec.errorRate.minRequests", "greater than or equal to 1"),
    (AR, "spec.events", {"types": ["ejection"]}, "spec", "set exactly one of errorRate, events"),
    (AR, "spec.errorRate", None, "spec", "set exactly one of errorRate, events"),
    (AR, "spec.webhook.url", "ftp://x/y", "spec.webhook.url", "http:// or https:// URL"),
    (AR, "spec.webhook.url", "http:///path", "spec.webhook.url", "http:// or https:// URL with a host"),
    (AR, "spec.webhook.url", "http://h:70000/", "spec.webhook.url", "Port out of range"),
    (AR, "spec.webhook.url", "http://h/a b", "spec.webhook.url", "without spaces"),
    (AR, "spec.webhook", None, "spec.webhook", "required field is missing"),
    (AR, "spec.webhook.headers", {"x": "a\nb"}, "spec.webhook.headers.x", "must not contain CR"),
    (AR, "spec.cooldown", "a while", "spec.cooldown", "invalid duration"),
    (EVENTS_RULE, "spec.events.types", ["ejection", "boom"], "spec.events.types[1]",
     "Input should be 'ejection'"),
    (EVENTS_RULE, "spec.events.types", [], "spec.events.types", "at least 1 item"),
    (EVENTS_RULE, "spec.events.types", ["return", "return"], "spec.events.types[1]",
     "'return' is listed twice"),
])
def test_alarm_rule_refusals(doc, path, value, where, reason):
    got_path, got_reason = refusal(with_(doc, path, value))
    assert got_path == where and reason in got_reason


def test_events_alarm_rule():
    rule = parse_resource(EVENTS_RULE)
    assert rule.spec.events.types == ["ejection", "breakerOpen"]
    assert rule.spec.error_rate is None


# -- HealthCheck ---------------------------------------------------------------------------

TCP_CHECK = {"apiVersion": "plait.io/v1alpha1", "kind": "HealthCheck",
             "metadata": {"name": "stock"}, "spec": {"host": "stock", "tcp": {}}}


def test_health_check_fields_and_defaults():
    hc = parse_resource(HC)
    assert isinstance(hc, HealthCheck)
    s = hc.spec
    assert (s.host, s.subset, s.interval, s.timeout, s.unhealthy_threshold,
            s.healthy_threshold) == ("pricing", "v2", "2s", "500ms", 3, 2)
    assert (s.http.path, s.http.host, s.tcp) == ("/healthz", "pricing.internal:8080", None)
    assert [(r.start, r.end) for r in s.http.expected_statuses] == [(200, 300), (418, 419)]
    tcp = parse_resource(TCP_CHECK).spec
    assert (tcp.subset, tcp.http, tcp.interval, tcp.timeout, tcp.unhealthy_threshold,
            tcp.healthy_threshold) == (None, None, "5s", "1s", 2, 1)
    assert tcp.tcp is not None
    plain = parse_resource(with_(with_(HC, "spec.http.expectedStatuses", None),
                                 "spec.http.host", None)).spec.http
    assert plain.host is None
    assert [(r.start, r.end) for r in plain.expected_statuses] == [(200, 400)]
    assert to_dict(parse_resource(TCP_CHECK))["spec"] == {"host": "stock", "tcp": {}}


@pytest.mark.parametrize("doc, path, value, where, reason", [
    (HC, "spec.host", None, "spec.host", "required field is missing"),
    (HC, "spec.host", "pri cing", "spec.host", "a host must be a non-empty name"),
    (HC, "spec.subset", "", "spec.subset", "at least 1 character"),
    (HC, "spec.http", None, "spec", "set exactly one of http, tcp"),
    (HC, "spec.tcp", {}, "spec", "set exactly one of http, tcp"),
    (TCP_CHECK, "spec.tcp", {"send": "PING"}, "spec.tcp.send", "unknown field"),
    (HC, "spec.http.path", None, "spec.http.path", "required field is missing"),
    (HC, "spec.http.path", "healthz", "spec.http.path", "String should match pattern"),
    (HC, "spec.http.path", "/health z", "spec.http.path", "String should match pattern"),
    (HC, "spec.http.host", "a b", "spec.http.host", "String should match pattern"),
    (HC, "spec.http.host", "h/x", "spec.http.host", "String should match pattern"),
    (HC, "spec.http.method", "HEAD", "spec.http.method", "unknown field"),
    (HC, "spec.http.expectedStatuses", [], "spec.http.expectedStatuses", "at least 1 item"),
    (HC, "spec.http.expectedStatuses.1", {"start": 200, "end": 200},
     "spec.http.expectedStatuses[1]", "end must be above start (end is exclusive"),
    (HC, "spec.http.expectedStatuses.0.start", 99, "spec.http.expectedStatuses[0].start",
     "greater than or equal to 100"),
    (HC, "spec.http.expectedStatuses.0.end", 601, "spec.http.expectedStatuses[0].end",
     "less than or equal to 600"),
    (HC, "spec.http.expectedStatuses.0.end", None, "spec.http.expectedStatuses[0].end",
     "required field is missing"),
    (HC, "spec.interval", "0s", "spec.interval", "must be longer than 0"),
    (HC, "spec.interval", "often", "spec.interval", "invalid duration 'often'"),
    (HC, "spec.timeout", "0", "spec.timeout", "must be longer than 0"),
    (HC, "spec.timeout", "2s", "spec.timeout", "must be shorter than the interval (2s)"),
    (TCP_CHECK, "spec.interval", "1s", "spec.timeout", "must be shorter than the interval (1s)"),
    (HC, "spec.unhealthyThreshold", 0, "spec.unhealthyThreshold", "greater than or equal to 1"),
    (HC, "spec.healthyThreshold", 1001, "spec.healthyThreshold", "less than or equal to 1000"),
    (HC, "spec.healthyThreshold", "two", "spec.healthyThreshold", "valid integer"),
    (HC, "spec.port", 8080, "spec.port", "unknown field"),
    (HC, "spec", None, "spec", "required field is missing"),
])
def test_health_check_refusals(doc, path, value, where, reason):
    got_path, got_reason = refusal(with_(doc, path, value))
    assert got_path == where and reason in got_reason


# -- FailureRateEjection -------------------------------------------------------------------

FRE = {"apiVersion": "plait.io/v1alpha1", "kind": "FailureRateEjection",
       "metadata": {"name": "pricing", "namespace": "shop"},
       "spec": {"host": "pricing", "subset": "v2", "minRequests": 40, "ratio": 3,
                "floorPercent": 35, "window": "1m", "minHosts": 3, "enforcingPercent": 40}}
FRE_DEFAULTS = {"apiVersion": "plait.io/v1alpha1", "kind": "FailureRateEjection",
                "metadata": {"name": "stock"}, "spec": {"host": "stock"}}


def test_failure_rate_ejection_fields_defaults_and_round_trip():
    s = parse_resource(FRE).spec
    assert (s.host, s.subset, s.min_requests, s.ratio, s.floor_percent, s.window,
            s.min_hosts, s.enforcing_percent) == ("pricing", "v2", 40, 3.0, 35, "1m", 3, 40)
    d = parse_resource(FRE_DEFAULTS)
    assert isinstance(d, FailureRateEjection)
    assert (d.spec.subset, d.spec.min_requests, d.spec.ratio, d.spec.floor_percent,
            d.spec.window, d.spec.min_hosts, d.spec.enforcing_percent) == (
        None, 10, 2.0, 20, "30s", 2, 100)
    assert to_dict(d)["spec"] == {"host": "stock"}
    for doc in (FRE, FRE_DEFAULTS):
        assert parse_resource(to_dict(parse_resource(doc))) == parse_resource(doc)


@pytest.mark.parametrize("path, value, where, reason", [
    ("spec.host", None, "spec.host", "required field is missing"),
    ("spec.host", "pri cing", "spec.host", "a host must be a non-empty name"),
    ("spec.subset", "", "spec.subset", "at least 1 character"),
    ("spec.minRequests", 0, "spec.minRequests", "greater than or equal to 1"),
    ("spec.minRequests", 2.5, "spec.minRequests", "valid integer"),
    ("spec.ratio", 0.9, "spec.ratio", "greater than or equal to 1"),
    ("spec.ratio", 1001, "spec.ratio", "less than or equal to 1000"),
    ("spec.ratio", float("nan"), "spec.ratio", "finite number"),
    ("spec.ratio", "twice", "spec.ratio", "valid number"),
    ("spec.floorPercent", -1, "spec.floorPercent", "greater than or equal to 0"),
    ("spec.floorPercent", 101, "spec.floorPercent", "less than or equal to 100"),
    ("spec.floorPercent", 12.5, "spec.floorPercent", "valid integer"),
    ("spec.window", "0s", "spec.window", "must be longer than 0"),
    ("spec.window", "soon", "spec.window", "invalid duration 'soon'"),
    ("spec.window", "500ms", "spec.window", "must be between 1s and 1h"),
    ("spec.window", "61m", "spec.window", "must be between 1s and 1h"),
    ("spec.minHosts", 0, "spec.minHosts", "greater than or equal to 1"),
    ("spec.enforcingPercent", -1, "spec.enforcingPercent", "greater than or equal to 0"),
    ("spec.enforcingPercent", 101, "spec.enforcingPercent", "less than or equal to 100"),
    ("spec.enforcingPercent", 50.5, "spec.enforcingPercent", "valid integer"),
    ("spec.baseEjectionTime", "30s", "spec.baseEjectionTime", "unknown field"),
    ("spec", None, "spec", "required field is missing"),
])
def test_failure_rate_ejection_refusals(path, value, where, reason):
    got_path, got_reason = refusal(with_(FRE, path, value))
    assert got_path == where and reason in got_reason
