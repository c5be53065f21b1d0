"""A bootstrap with one value replaced by anything either parses or raises ConfigError, and
when protobuf refuses it the path leads to the replaced value: to it, into it, or to a
message that holds it (when the new value clashes with a sibling, as two members of one
oneof do). Never a path somewhere else, never another exception."""

import copy
import json
import os

from envoy.config.bootstrap.v3 import bootstrap_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.core.errors import ConfigError
from plait.dataplane.bootstrap import parse_bootstrap
from plait.testing import sidecar as sc
from plait.xds.resources import HCM, parse

ROUTES = [
    sc.route("api", prefix="/api/", timeout=2.5,
             retry=sc.retry_policy("5xx", num_retries=3, per_try_timeout=0.5,
                                   retriable_status_codes=[409]),
             headers=[{"name": "x-canary", "exact_match": "yes"}], name="api"),
    sc.route(path="/split", weighted={"api": 30, "web": 70}, name="split"),
]
SEED = json.loads(json.dumps(sc.bootstrap(
    listeners=[sc.listener("outbound", [sc.virtual_host("all", ["*"], ROUTES)], port=15001,
                           connection_limit=10)],
    clusters=[sc.cluster("api", [8080, ("10.0.0.2", 9090, 3)]), sc.cluster("web", [8081])],
    node="n1")))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
    st.sampled_from(["1s", "eighty", "ROUND_ROBIN", "", "/x", HCM]),
)
keys = st.one_of(st.sampled_from(["name", "port_value", "prefix", "path", "typed_config",
                                  "@type", "address", "clusters", "endpoints"]),
                 st.text(max_size=5), st.integers())
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


def _locations(node, at=()):
    yield at
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "@type":  # a new type makes its siblings the refused fields
                yield from _locations(value, at + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _locations(value, at + (index,))


def _path(at: tuple) -> str:
    out = ""
    for part in at:
        if isinstance(part, str) and part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _related(a: str, b: str) -> bool:
    """One path is the other or leads into it."""
    short, long = sorted((a, b), key=len)
    return long == short or not short or long.startswith((short + ".", short + "["))


@st.composite
def one_change(draw):
    doc = copy.deepcopy(SEED)
    at = draw(st.sampled_from([a for a in _locations(doc) if a]))
    node = doc
    for part in at[:-1]:
        node = node[part]
    node[at[-1]] = draw(trees)
    return doc, at


@settings(max_examples=int(os.environ.get("PLAIT_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(one_change())
def test_a_refused_value_is_named_where_it_is(change):
    doc, at = change
    try:
        parse(copy.deepcopy(doc), bootstrap_pb2.Bootstrap())
    except ConfigError as err:
        assert err.reason and _related(err.path, _path(at)), (err.path, _path(at))
    try:
        parse_bootstrap(doc)
    except ConfigError as err:
        assert isinstance(err.path, str) and err.reason
