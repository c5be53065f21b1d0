"""Local rate limiting with token buckets (`plait.filters.http.rate_limit`).

Each rule covers the requests its `match` selects and gives every value of its `key` a
bucket of `maxTokens` (default `tokensPerFill`), refilled with `tokensPerFill` tokens
every `fillIntervalMs`, as Envoy's local rate limit filter does. A request takes one token
from the bucket of each rule that covers it; with an empty bucket it is answered at once
with the rule's `status` (429 by default) and `x-plait-error: rate_limited`, or with the
rule's `fallback` (a Degrade). Keys:

    service         one bucket for all requests
    app             the calling app: `x-plait-caller-app`, set by the caller's sidecar
    caller          the calling instance: `x-plait-caller`, else the downstream address
    method          the request method
    header:<name>   that request header's value

A request without the header keyed on shares the bucket of "no value". Buckets are kept
per rule in a bounded map (MAX_KEYS, least recently used forgotten) and refilled lazily
from the monotonic clock, read once per request.
Cluster-wide ("global") limits need nothing here: the control plane gives each instance
its share of the quota as an ordinary rule. Buckets are per worker process and survive
config pushes: rules with the same name and key share their buckets across routes.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field

from plait.core.errors import ConfigError, Reason
from plait.dataplane.filters.stateful import StatefulFilter
from plait.dataplane.filters.typed_struct import (
    MATCH_ALL, Fallback, Fields, RequestMatch, TypedStruct, fallback, request_match, unpack,
)
from plait.dataplane.http.caller import CALLER, CALLER_APP

NAME = "plait.filters.http.rate_limit"
TYPE_URL = "type.plait.io/plait.filters.http.rate_limit.v1.RateLimit"
MAX_KEYS = 10_000  # buckets per rule
MIN_FILL_INTERVAL = 0.05  # seconds; Envoy's local rate limit refuses less than 50 ms
MAX_RULES = 10_000  # rule states a filter keeps (oldest forgotten first)


class Key(enum.Enum):
    SERVICE = "service"
    APP = "app"
    CALLER = "caller"
    METHOD = "method"
    HEADER = "header"


@dataclass(frozen=True, slots=True)
class RuleConfig:
    name: str
    key: Key
    tokens_per_fill: int
    fill_interval: float  # seconds
    max_tokens: int
    header: bytes = b""  # app, caller, header:<name>: the header read, lower case
    match: RequestMatch = MATCH_ALL
    status: int = 429
    fallback: Fallback | None = None
    service: str = ""  # the protected service, for events ("" = this sidecar's app)
    state_key: str = ""
    # Plain bools for the request path (reading an enum member is slow in CPython 3.11):
    # the rule covers every request; keyed by method; keyed by caller (a request without
    # its header is keyed by its peer).
    covers_all: bool = field(default=False, init=False, compare=False, repr=False)
    by_method: bool = field(default=False, init=False, compare=False, repr=False)
    by_peer: bool = field(default=False, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "covers_all", self.match is MATCH_ALL)
        object.__setattr__(self, "by_method", self.key is Key.METHOD)
        object.__setattr__(self, "by_peer", self.key is Key.CALLER)


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    rules: tuple[RuleConfig, ...]


def _key(text: str, path: str) -> tuple[Key, bytes]:
    """The key kind and the header its value is read from (b"" for none)."""
    if text.startswith("header:"):
        name = text[7:]
        if not name or any(c in name for c in " \t\r\n\0:"):
            raise ConfigError(path, "header:<name> needs a header name")
        return Key.HEADER, name.lower().encode()
    try:
        key = Key(text)
    except ValueError:
        key = None
    if key is None or key is Key.HEADER:
        raise ConfigError(path, "expected service, app, caller, method or header:<name>")
    return key, CALLER_APP if key is Key.APP else CALLER if key is Key.CALLER else b""


def compile_config(msg: TypedStruct, path: str) -> RateLimitConfig:
    top = Fields(unpack(msg, TYPE_URL, path), f"{path}.value")
    rules, names = [], set()
    for r in top.objects("rules"):
        name = r.string("name")
        if not name or name in names:
            raise ConfigError(r.at("name"), f"must be unique and non-empty, got {name!r}")
        names.add(name)
        key_text = r.string("key", "service")
        key, header = _key(key_text, r.at("key"))
        per_fill = r.integer("tokensPerFill", lo=1, hi=10**9)
        interval = r.integer("fillIntervalMs", lo=int(MIN_FILL_INTERVAL * 1000),
                             hi=86_400_000) / 1000.0
        rules.append(RuleConfig(
            name=name, key=key, header=header, tokens_per_fill=per_fill,
            fill_interval=interval,
            max_tokens=r.integer("maxTokens", per_fill, lo=1, hi=10**9),
            match=request_match(r.obj("match")),
            status=r.integer("status", 429, lo=400, hi=599),
            fallback=fallback(r.obj("fallback"), Reason.RATE_LIMITED),
            service=r.string("service", ""),
            state_key=f"{name}\0{key_text}"))
        r.done()
    top.done()
    if not rules:
        raise ConfigError(f"{path}.value.rules", "at least one rule is required")
    return RateLimitConfig(tuple(rules))


class Buckets:
    """One rule's token buckets: key value -> [tokens, time of the last fill].

    The bucket of the last take is kept at hand, so a rule whose requests share a key (the
    service, or one busy caller) finds it without a lookup or a reordering."""

    __slots__ = ("entries", "max_keys", "last", "last_bucket")

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.entries: OrderedDict[bytes, list] = OrderedDict()
        self.max_keys = max_keys
        self.last = None  # the key of the last take, already the most recently used
        self.last_bucket = None  # and its bucket

    def take(self, rule: RuleConfig, key: bytes, now: float) -> bool:
        """Take a token from `key`'s bucket at time `now`; False if it is empty."""
        if key == self.last:
            b = self.last_bucket
        else:
            entries = self.entries
            b = entries.get(key)
            if b is None:
                if len(entries) >= self.max_keys:
                    entries.popitem(last=False)
                b = entries[key] = [rule.max_tokens, now]
            else:
                entries.move_to_end(key)
            self.last, self.last_bucket = key, b
        elapsed = now - b[1]
        if elapsed >= rule.fill_interval:  # exactly when int(elapsed / interval) > 0
            fills = int(elapsed / rule.fill_interval)
            b[0] = min(rule.max_tokens, b[0] + fills * rule.tokens_per_fill)
            b[1] += fills * rule.fill_interval
        if b[0] >= 1:
            b[0] -= 1
            return True
        return False


# The members key_of compares with, bound once: each read of `Key.SERVICE` goes through
# the enum's metaclass (about 0.1 µs in CPython 3.11).
_SERVICE, _METHOD, _CALLER = Key.SERVICE, Key.METHOD, Key.CALLER


def key_of(rule: RuleConfig, ex) -> bytes:
    """The bucket key of a request under `rule`."""
    kind = rule.key
    if kind is _SERVICE:
        return b""
    if kind is _METHOD:
        return ex.request.method
    name = rule.header
    for n, v in ex.request.headers:
        if n == name:
            return v
    if kind is _CALLER:
        return _peer(ex)
    return b""


def _peer(ex) -> bytes:
    """The caller key of a request without `x-plait-caller`: its downstream address."""
    return ex.down.peer_ip() or b""


class _States(dict):
    """Rule state key -> Buckets, made on first use; beyond MAX_RULES the oldest is
    forgotten. Indexing (`states[key]`) makes a missing one, so the request path needs
    no get-and-test."""

    __slots__ = ()

    def __missing__(self, key: str) -> Buckets:
        if len(self) >= MAX_RULES:
            del self[next(iter(self))]
        buckets = self[key] = Buckets()
        return buckets


class RateLimitFilter(StatefulFilter):
    """`states`: {rule's state key: Buckets}, made on first use."""

    __slots__ = ()
    new_states = _States

    def on_request(self, ex) -> bool:
        # A route is known: the filter chain runs only for requests that found one.
        cfg = ex.route.per_filter.get(NAME, self.config)
        if cfg is None:
            return True
        now = self.clock()
        for rule in cfg.rules:
            if not rule.covers_all and not rule.match.matches(ex):
                continue
            buckets = self.states[rule.state_key]
            # key_of(rule, ex), inlined
            name = rule.header
            if name:  # app, caller, header:<name>
                for n, v in ex.request.headers:
                    if n == name:
                        key = v
                        break
                else:
                    key = _peer(ex) if rule.by_peer else b""
            elif rule.by_method:
                key = ex.request.method
            else:
                key = b""
            # Buckets.take's common case inlined: the bucket of the last take, no fill
            # due, a token left (tokens are whole numbers: `if tokens` is `tokens >= 1`).
            if key == buckets.last:
                b = buckets.last_bucket
                tokens = b[0]
                if now - b[1] < rule.fill_interval and tokens:
                    b[0] = tokens - 1
                    continue
            if not buckets.take(rule, key, now):
                return self._refuse(ex, rule, now)
        return True

    def _refuse(self, ex, rule: RuleConfig, now: float) -> bool:
        """Answer a request the rule's bucket had no token for; STOP (False)."""
        mgr = ex.mgr
        mgr.stats.count_by("rate_limit_refused_total", "rule", rule.name)
        events = mgr.events
        if events is not None:
            events.count("rateLimited", rule=rule.name, service=rule.service, now=now)
        fb = rule.fallback
        if fb is None:
            ex.local_reply(Reason.RATE_LIMITED, status=rule.status)
            return False
        mgr.stats.count_by("degrade_fallback_total", "rule", rule.name)
        if events is not None:
            events.count("degrade", rule=rule.name, service=rule.service, now=now)
        ex.reason = Reason.RATE_LIMITED
        ex.direct_reply(fb.status, fb.body, extra=fb.headers)
        return False
