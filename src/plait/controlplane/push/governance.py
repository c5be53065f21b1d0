"""Plait's governance kinds → the sidecar's own HTTP filters.

Who enforces what:

* **RateLimit** protects the service that is called, so the callee enforces it: every
  instance of `spec.service` gets a `plait.filters.http.rate_limit` filter on its
  INBOUND listener, one token-bucket rule per RateLimit rule. A `scope: global` rule is
  divided among the service's healthy registered instances (`plait.controlplane.
  governance`): each sidecar gets its own share as an ordinary bucket. A registry change
  re-runs the push, so shares rebalance as instances come and go.
* **CircuitBreaker** protects the caller from a failing callee, so the caller enforces
  it: every route to `spec.service` in a caller's OUTBOUND route table carries a
  `plait.filters.http.circuit_breaker` config in `typed_per_filter_config`. Breakers of
  one resource share their name, so their state is one per caller sidecar (per worker),
  across all routes to the service.
* **Degrade** is the answer given instead of the refusal: `when: [rateLimited]` becomes
  the `fallback` of the service's rate-limit rules, `when: [circuitOpen]` the fallback of
  its breakers. The sidecar keeps one fallback per rule and no match of its own for it,
  so a Degrade applies to a rule when it has no `match` or the very same match as the
  rule's resource; the first such Degrade by namespace and name wins.

Configs travel as `xds.type.v3.TypedStruct` in the shapes the sidecar's filters compile
(`plait.dataplane.filters.rate_limit` / `circuit_breaker`). Listeners carry a filter only
when some resource needs it, so a proxy without such rules runs no extra filter.
"""

from __future__ import annotations

from google.protobuf import struct_pb2
from xds.type.v3 import typed_struct_pb2

from plait.controlplane.governance import burst_share, instance_index, quota_share
from plait.controlplane.push.index import MeshIndex, spec
from plait.model.duration import parse_duration

# Names and type URLs the sidecar registers its filters under (checked by a unit test).
RATE_LIMIT_FILTER = "plait.filters.http.rate_limit"
RATE_LIMIT_TYPE = "type.plait.io/plait.filters.http.rate_limit.v1.RateLimit"
BREAKER_FILTER = "plait.filters.http.circuit_breaker"
BREAKER_TYPE = "type.plait.io/plait.filters.http.circuit_breaker.v1.CircuitBreaker"
# The sidecar's ranges (its filters refuse a config outside them, and a refusal would
# cost the proxy its whole update): fill interval, breaker window, open time, slow mark.
MIN_FILL_MS, MAX_FILL_MS = 50, 86_400_000
MIN_WINDOW_MS, MAX_WINDOW_MS = 10, 3_600_000
MAX_OPEN_MS = 86_400_000
MAX_SLOW_MS = 3_600_000
# Headers the sidecar writes on every answer itself and so refuses in a fallback.
_OWN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "x-plait-error"})


# -- RateLimit on the callee -------------------------------------------------------------------

def share_key(index: MeshIndex, proxy) -> tuple[int, int] | None:
    """(live instances, this instance's index) when a global rule protects the proxy's
    app, else None: what, besides the proxy's shape, its inbound listener depends on."""
    if not proxy.app or not any(r.scope == "global" for rl in
                                index.rules("RateLimit", proxy.app) for r in spec(rl).rules):
        return None
    service = index.service(proxy.app)
    ids = [i.instance_id for i in (service.instances if service else ())
           if i.instance_id and i.healthy]
    return instance_index(ids, proxy.node_id)


def inbound_rate_limit(index: MeshIndex, proxy) -> typed_struct_pb2.TypedStruct | None:
    """The rate-limit filter config for the proxy's inbound side, or None."""
    resources = index.rules("RateLimit", proxy.app) if proxy.app else []
    if not resources:
        return None
    n, i = share_key(index, proxy) or (1, 0)
    rules = []
    for rl in resources:
        s = spec(rl)
        degrade = _degrade(index, s.service, "rateLimited", s.match)
        for number, rule in enumerate(s.rules):
            out = {"name": f"{_name(rl)}/rules[{number}]", "key": rule.key,
                   "service": s.service, "status": rule.response.status,
                   **_bucket(rule, n, i)}
            if s.match is not None:
                out["match"] = _match(s.match)
            if degrade is not None:
                out["fallback"] = degrade
            rules.append(out)
    return _typed(RATE_LIMIT_TYPE, {"rules": rules})


def _bucket(rule, n: int, i: int) -> dict:
    per_ms = max(MIN_FILL_MS, round(rule.limit.per_seconds * 1000))
    tokens, burst = quota_share(rule, n, i), burst_share(rule, n, i)
    if tokens < 1:
        # A share of 0. The sidecar wants at least one token per fill, so the nearest it
        # can do is one request a day.
        return {"tokensPerFill": 1, "fillIntervalMs": MAX_FILL_MS, "maxTokens": 1}
    if per_ms > MAX_FILL_MS:  # periods over a day: the same rate, refilled daily
        tokens = max(1, tokens * MAX_FILL_MS // per_ms)
        per_ms = MAX_FILL_MS
    return {"tokensPerFill": tokens, "fillIntervalMs": per_ms, "maxTokens": max(burst, 1)}


# -- CircuitBreaker on the caller --------------------------------------------------------------

def breakers(index: MeshIndex, host: str) -> typed_struct_pb2.TypedStruct | None:
    """The circuit-breaker config for routes to `host`, or None when nothing guards it."""
    return index.memo(("breakers", host), lambda: _breakers(index, host))


def _breakers(index: MeshIndex, host: str):
    resources = index.rules("CircuitBreaker", host)
    if not resources:
        return None
    out = []
    for cb in resources:
        s = spec(cb)
        breaker = {"name": _name(cb), "service": s.service, "strategy": s.strategy,
                   "threshold": int(s.threshold) if s.strategy == "errorCount" else s.threshold,
                   "minRequests": s.min_requests,
                   "statWindowMs": _ms(s.stat_window, MIN_WINDOW_MS, MAX_WINDOW_MS),
                   "openDurationMs": _ms(s.open_duration, 1, MAX_OPEN_MS),
                   "halfOpenRequests": s.half_open_requests}
        if s.slow_request_threshold is not None:
            slow = parse_duration(s.slow_request_threshold) * 1000
            breaker["slowRequestThresholdMs"] = min(max(slow, 1.0), MAX_SLOW_MS)
        if s.match is not None:
            breaker["match"] = _match(s.match)
        degrade = _degrade(index, s.service, "circuitOpen", s.match)
        if degrade is not None:
            breaker["fallback"] = degrade
        out.append(breaker)
    return _typed(BREAKER_TYPE, {"breakers": out})


# -- shared pieces -----------------------------------------------------------------------------

def _degrade(index: MeshIndex, service: str, trigger: str, match) -> dict | None:
    for dg in index.rules("Degrade", service):
        s = spec(dg)
        if trigger in s.when and (s.match is None or _same_match(s.match, match)):
            fb = s.fallback
            out: dict = {"status": fb.status}
            headers = {k: v for k, v in fb.headers.items() if k.lower() not in _OWN_HEADERS}
            if headers:
                out["headers"] = headers
            if fb.body:
                out["body"] = fb.body
            return out
    return None


def _same_match(a, b) -> bool:
    if b is None:
        return False
    fields = ("method", "path", "header", "caller")
    return all(getattr(a, f, None) == getattr(b, f, None) for f in fields)


def _match(m) -> dict:
    """A governance `match` in the sidecar's shape (`header` becomes a one-item list)."""
    out: dict = {}
    if m.method is not None:
        out["method"] = m.method
    if m.path is not None:
        out["path"] = {"exact": m.path.exact} if m.path.exact else {"prefix": m.path.prefix}
    header = getattr(m, "header", None)
    if header is not None:
        out["headers"] = [{"name": header.name} if header.value is None
                          else {"name": header.name, "value": header.value}]
    caller = getattr(m, "caller", None)
    if caller is not None:
        out["caller"] = caller
    return out


def _name(resource) -> str:
    return f"{resource.metadata.namespace}/{resource.metadata.name}"


def _ms(text: str, lo: int, hi: int) -> int:
    """A duration in whole milliseconds, brought into the sidecar's range lo..hi."""
    return min(max(lo, round(parse_duration(text) * 1000)), hi)


def _typed(type_url: str, value: dict) -> typed_struct_pb2.TypedStruct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return typed_struct_pb2.TypedStruct(type_url=type_url, value=struct)
