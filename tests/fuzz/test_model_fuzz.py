"""Any input to the resource parser either parses or raises ConfigError, never anything else.

Three feeds: mutations of valid resources (the inputs most likely to reach deep
validators), arbitrary JSON-like trees built from Istio's own field names, and raw text
through the YAML front door.
"""

import copy
import os

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.core.errors import ConfigError
from plait.model import parse_documents, parse_resource, to_dict

SEEDS = [
    {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [{
            "match": [{"uri": {"prefix": "/"}, "headers": {"x": {"regex": "a.*"}}}],
            "route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 60},
                      {"destination": {"host": "reviews", "subset": "v2"}, "weight": 40}],
            "timeout": "1s", "retries": {"attempts": 2, "perTryTimeout": "100ms", "retryOn": "5xx"},
            "fault": {"abort": {"percentage": {"value": 1}, "httpStatus": 503}},
            "mirror": {"host": "shadow"}, "mirrorPercentage": {"value": 5},
        }]},
    },
    {
        "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"host": "reviews", "trafficPolicy": {
            "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}},
            "connectionPool": {"tcp": {"maxConnections": 1, "connectTimeout": "1s"}},
            "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s"}},
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
    },
    {
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "ServiceEntry",
        "metadata": {"name": "db"},
        "spec": {"hosts": ["db"], "ports": [{"number": 5432, "name": "pg", "protocol": "TCP"}],
                 "resolution": "STATIC", "endpoints": [{"address": "10.0.0.1", "ports": {"pg": 1}}]},
    },
]

FIELD_NAMES = sorted({
    "apiVersion", "kind", "metadata", "name", "namespace", "labels", "spec", "hosts", "http",
    "match", "uri", "exact", "prefix", "regex", "route", "destination", "host", "subset",
    "port", "number", "weight", "timeout", "retries", "attempts", "perTryTimeout", "retryOn",
    "fault", "delay", "abort", "percentage", "value", "fixedDelay", "httpStatus", "mirror",
    "subsets", "trafficPolicy", "loadBalancer", "simple", "consistentHash", "ports",
    "endpoints", "address", "resolution", "protocol", "headers", "set", "remove",
})
KINDS = ["VirtualService", "DestinationRule", "ServiceEntry"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
    st.sampled_from(["5s", "-1s", "1h30m", "(", "[a-", "ROUND_ROBIN", "v1", "0", "", "10.0.0.1"]),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=6), st.integers())
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=30,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _replace(doc, path, value):
    if not path:
        return value
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


def _parses_or_config_error(doc):
    try:
        resource = parse_resource(doc)
    except ConfigError as err:
        assert isinstance(err.path, str) and err.reason
        return
    # Whatever parses must dump to Istio YAML that parses to the same resource.
    assert parse_resource(yaml.safe_load(yaml.safe_dump(to_dict(resource)))) == resource


@st.composite
def mutated(draw):
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        doc = _replace(doc, path, draw(trees))
    return doc


# PLAIT_FUZZ_EXAMPLES raises the count for a deeper run by hand.
FUZZ = settings(max_examples=int(os.environ.get("PLAIT_FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated())
def test_mutated_resources(doc):
    _parses_or_config_error(doc)


@FUZZ
@given(st.sampled_from(KINDS), trees)
def test_arbitrary_trees(kind, tree):
    doc = dict(tree) if isinstance(tree, dict) else {"spec": tree}
    doc.setdefault("kind", kind)
    _parses_or_config_error(doc)


@FUZZ
@given(st.one_of(st.text(max_size=200), trees.map(lambda t: yaml.safe_dump_all([t, t]))))
def test_yaml_text(text):
    try:
        parse_documents(text)
    except ConfigError:
        pass
