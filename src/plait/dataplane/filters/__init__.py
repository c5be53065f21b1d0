"""HTTP filters, registered by name in one explicit table.

A listener's `http_filters` (Envoy's HttpConnectionManager field) names the chain; each
entry's `typed_config` is compiled once, at config load, by its filter's `compile`; a
route's `typed_per_filter_config` is compiled the same way and overrides the listener's
config for that route. The router is the terminal filter, built into the request path
(`http/exchange.py`), and must come last, as in Envoy.

A filter is a small object made once per listener config with one method,
`on_request(exchange) -> bool`: CONTINUE (True) passes the request on; STOP (False) means
the filter answered (`exchange.local_reply`) or will call `exchange.resume()` (later, or
even before returning: the walk then goes on once it has returned).
Two optional methods: `on_complete(exchange)`, called when the exchange finishes (its
`code` is the status sent, 0 for none), for filters that learn from outcomes; and
`adopt(previous)`, called on a new filter with the one of the same name it replaces after
a config push, to carry state (breakers, token buckets) over. What a filter keeps for
later goes in `exchange.filter_state`: None, or a dict by filter name — or, alone there,
the circuit breaker's admission record itself (a tuple or a list; see circuit_breaker),
which a filter adding its own entry turns into {circuit_breaker.NAME: record}.
Each filter lives in its own module here and is added to `REGISTRY` by hand: importing a
module never registers anything, and a duplicate name is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from google.protobuf.message import Message

from plait.core.errors import ConfigError
from plait.dataplane.filters import circuit_breaker, fault, rate_limit, rbac

CONTINUE = True
STOP = False
ROUTER = "envoy.filters.http.router"


@dataclass(frozen=True, slots=True)
class FilterFactory:
    name: str
    config_type: type[Message] | None  # the protobuf type of typed_config
    compile: Callable[[Any, str], Any] | None  # (message, field path) -> plain config
    create: Callable[[Any], Any] | None  # plain config -> filter object
    repeatable: bool = False  # may appear more than once in a chain (RBAC: DENY, ALLOW)


def _registry(*factories: FilterFactory) -> dict[str, FilterFactory]:
    table: dict[str, FilterFactory] = {}
    for f in factories:
        if f.name in table:
            raise ValueError(f"http filter {f.name!r} registered twice")
        table[f.name] = f
    return table


REGISTRY = _registry(
    FilterFactory(ROUTER, None, None, None),
    FilterFactory(fault.NAME, fault.HTTPFault, fault.compile_config, fault.FaultFilter),
    FilterFactory(rate_limit.NAME, rate_limit.TypedStruct, rate_limit.compile_config,
                  rate_limit.RateLimitFilter),
    FilterFactory(circuit_breaker.NAME, circuit_breaker.TypedStruct,
                  circuit_breaker.compile_config, circuit_breaker.CircuitBreakerFilter),
    FilterFactory(rbac.NAME, rbac.RBAC, rbac.compile_config, rbac.RbacFilter,
                  repeatable=True),
)


def _unpack(factory: FilterFactory, any_msg, path: str):
    if factory.config_type is None or not any_msg.type_url:
        return None
    msg = factory.config_type()
    if not any_msg.Unpack(msg):
        raise ConfigError(path, f"expected {msg.DESCRIPTOR.full_name}, got {any_msg.type_url}")
    return factory.compile(msg, path)


def compile_chain(http_filters, *, path: str) -> tuple[tuple[str, Any], ...]:
    """Check and compile a listener's chain: every name registered, none twice, the
    router last. Returns ((name, compiled config or None), ...)."""
    out = []
    seen = set()
    for i, hf in enumerate(http_filters):
        factory = REGISTRY.get(hf.name)
        if factory is None:
            raise ConfigError(f"{path}[{i}].name", f"unknown http filter {hf.name!r}; "
                              f"known: {sorted(REGISTRY)}")
        if hf.name in seen and not factory.repeatable:
            raise ConfigError(f"{path}[{i}].name", f"http filter {hf.name!r} appears twice")
        seen.add(hf.name)
        out.append((hf.name, _unpack(factory, hf.typed_config, f"{path}[{i}].typed_config")))
    if not out:
        return ((ROUTER, None),)
    if out[-1][0] != ROUTER:
        raise ConfigError(path, f"the chain must end with {ROUTER!r}")
    return tuple(out)


def compile_per_route(per_filter, *, path: str) -> dict:
    """A route's `typed_per_filter_config`, compiled: {filter name: config}."""
    out = {}
    for name, any_msg in per_filter.items():
        factory = REGISTRY.get(name)
        if factory is None or factory.compile is None:
            raise ConfigError(f"{path}[{name}]", f"no per-route config for {name!r}")
        out[name] = _unpack(factory, any_msg, f"{path}[{name}]")
    return out


def build_chain(compiled: tuple[tuple[str, Any], ...], previous: tuple = ()) -> tuple:
    """The filter objects of a compiled chain, router excluded. Each new filter that can
    `adopt` takes over the state of the filter of the same kind in `previous`."""
    old = {type(f): f for f in previous}
    out = []
    for name, config in compiled:
        if name == ROUTER:
            continue
        f = REGISTRY[name].create(config)
        before = old.get(type(f))
        if before is not None and hasattr(f, "adopt"):
            f.adopt(before)
        out.append(f)
    return tuple(out)


def completions(chain: tuple) -> tuple:
    """The filters of a chain that want `on_complete`."""
    return tuple(f for f in chain if hasattr(f, "on_complete"))
