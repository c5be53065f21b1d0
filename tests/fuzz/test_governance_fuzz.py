"""The plait.io kinds under mutation: a document parses (and round-trips) or raises
ConfigError, never anything else. Seeds are the model tests' documents; replacements are
trees of these kinds' own field names and values that sit on validation edges."""

import copy
import os

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.core.errors import ConfigError
from plait.model import parse_resource, to_dict

SEEDS = list(yaml.safe_load_all("""
apiVersion: plait.io/v1alpha1
kind: RateLimit
metadata: {name: a}
spec:
  service: a
  match: {method: GET, path: {prefix: /}, header: {name: x, value: y}, caller: web}
  rules:
  - {key: service, limit: {requests: 10, per: 1s}, burst: 2, scope: global}
  - {key: "header:x", limit: {requests: 10, per: 1m}, response: {status: 503}}
---
apiVersion: plait.io/v1alpha1
kind: CircuitBreaker
metadata: {name: a}
spec: {service: a, match: {method: GET}, strategy: slowRequestRatio, threshold: 0.5,
       slowRequestThreshold: 1s, openDuration: 5s, statWindow: 1s, minRequests: 2}
---
apiVersion: plait.io/v1alpha1
kind: Degrade
metadata: {name: a}
spec: {service: a, when: [circuitOpen], fallback: {status: 200, headers: {a: b}, body: x}}
---
apiVersion: plait.io/v1alpha1
kind: AlarmRule
metadata: {name: a}
spec: {events: {types: [ejection], service: a}, webhook: {url: "http://h/x"}, cooldown: 1s}
---
apiVersion: plait.io/v1alpha1
kind: HealthCheck
metadata: {name: a}
spec: {host: a, subset: v1, http: {path: /h, host: "a:80", expectedStatuses: [{start: 200,
       end: 300}]}, interval: 2s, timeout: 1s, unhealthyThreshold: 2, healthyThreshold: 1}
---
apiVersion: plait.io/v1alpha1
kind: FailureRateEjection
metadata: {name: a}
spec: {host: a, subset: v1, minRequests: 10, ratio: 1.5, floorPercent: 20, window: 30s,
       minHosts: 2, enforcingPercent: 50}
"""))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2**40), st.floats(), st.text(max_size=8),
    st.sampled_from(["1s", "0s", "49ms", "2h", "service", "header:", "header:x y", "global",
                     "errorCount", "slowRequestRatio", "rateLimited", "ejection", "GET", "get",
                     "/", "http://h:99999/", "ftp://h", "a\r\nb", "plait.io/v1alpha1"]),
)  # fmt: skip
keys = st.sampled_from(["key", "limit", "requests", "per", "burst", "scope", "status", "match",
                        "path", "exact", "prefix", "header", "name", "value", "threshold",
                        "strategy", "when", "fallback", "events", "types", "errorRate",
                        "webhook", "url", "headers", "window", "host", "subset", "http",
                        "tcp", "expectedStatuses", "start", "end", "interval", "timeout",
                        "unhealthyThreshold", "minRequests", "ratio", "floorPercent",
                        "minHosts", "enforcingPercent", "x"])  # fmt: skip
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)), max_leaves=20)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated(draw):
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        if not path:
            continue
        node = doc
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = draw(trees)
    return doc


@settings(max_examples=int(os.environ.get("PLAIT_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_governance_resources(doc):
    try:
        resource = parse_resource(doc)
    except ConfigError as err:
        assert isinstance(err.path, str) and err.reason
        return
    assert parse_resource(yaml.safe_load(yaml.safe_dump(to_dict(resource)))) == resource
