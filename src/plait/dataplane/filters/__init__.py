"""HTTP filters, registered by name in one explicit table.

A listener's `http_filters` (Envoy's HttpConnectionManager field) names the chain; it is
checked against this table when config is compiled. The router is the terminal filter
and must come last, as in Envoy. Each further filter (authz, rate limit, fault, ...) lives
in its own file in this package and is added to `REGISTRY` here, by hand: importing a
module never registers anything.
"""

from __future__ import annotations

from plait.core.errors import ConfigError

ROUTER = "envoy.filters.http.router"

# name -> factory; the router is built into the request path (dataplane/http/exchange.py),
# so it has no factory of its own.
REGISTRY: dict[str, object] = {
    ROUTER: None,
}


def check_chain(names: tuple[str, ...], *, path: str) -> None:
    """Raise ConfigError unless every name is registered, none repeats, and the chain ends
    with the router."""
    seen = set()
    for i, name in enumerate(names):
        if name not in REGISTRY:
            raise ConfigError(f"{path}[{i}].name", f"unknown http filter {name!r}; "
                              f"known: {sorted(REGISTRY)}")
        if name in seen:
            raise ConfigError(f"{path}[{i}].name", f"http filter {name!r} appears twice")
        seen.add(name)
    if not names or names[-1] != ROUTER:
        raise ConfigError(path, f"the chain must end with {ROUTER!r}")
