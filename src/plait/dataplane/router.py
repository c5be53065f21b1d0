"""Route matching: Host header → virtual host → first matching route → cluster.

A `Router` is compiled once from a `RouteTable`; path and header conditions become bytes
and compiled regexes so that a request is matched with `startswith`, `==` and dict
lookups. Host lookups are memoised per router (bounded), since a sidecar sees few hosts.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from itertools import accumulate
from urllib.parse import unquote_to_bytes

from plait.core.regex import Regex
from plait.dataplane.config import PathMatchKind, Route, RouteTable, VirtualHost

_HOST_CACHE_MAX = 1024
_UNSEEN = object()  # a host not yet in the cache (None there means: no virtual host)


class _CompiledRoute:
    __slots__ = ("route", "kind", "is_prefix", "value", "regex", "lower", "headers", "query",
                 "clusters", "cum", "total", "any_path")

    def __init__(self, route: Route) -> None:
        self.route = route
        self.kind = route.path_kind
        self.is_prefix = route.path_kind is PathMatchKind.PREFIX
        self.lower = not route.case_sensitive
        value = route.path.encode()
        self.value = value.lower() if self.lower else value
        self.regex = (Regex(value, ignore_case=self.lower)  # compile.py checked it
                      if self.kind is PathMatchKind.REGEX else None)
        self.headers = route.headers
        self.query = route.query
        self.clusters = [w.name for w in route.weighted_clusters]
        self.cum = list(accumulate(w.weight for w in route.weighted_clusters))
        self.total = self.cum[-1] if self.cum else 0
        # prefix "/" and nothing else: matches every origin-form target, told without a call
        self.any_path = self.is_prefix and self.value == b"/" and not self.headers \
            and not self.query

    def matches(self, req, index: dict | None = None) -> bool:
        """Whether the request matches; `index` is the request's header_index, built once
        per request by the router when some route has header conditions."""
        target = req.target
        if self.lower:
            target = target.lower()
        if self.is_prefix:  # a bool, not the enum: an enum member read is a metaclass lookup
            if not target.startswith(self.value):
                return False
        else:
            path = target.split(b"?", 1)[0]
            if self.regex is None:
                if path != self.value:
                    return False
            elif not self.regex.fullmatch(path):
                return False
        if self.headers and not headers_match(self.headers, req, index):
            return False
        if self.query and not query_params_match(self.query, req.target):
            return False
        return True

    def pick_cluster(self) -> str:
        """The cluster of this request: a weighted pick when the route splits traffic."""
        if not self.total:
            return self.route.cluster
        return self.clusters[bisect_right(self.cum, random.random() * self.total)]


def header_index(req) -> dict[bytes, list[bytes]]:
    """Header name → its values, pseudo-headers included: built once per request, so that
    a table of routes with header conditions costs a dict probe per condition."""
    index: dict[bytes, list[bytes]] = {b":method": [req.method], b":path": [req.target]}
    if req.host:
        index[b":authority"] = [req.host]
    for name, value in req.headers:
        values = index.get(name)
        if values is None:
            index[name] = [value]
        else:
            values.append(value)
    return index


def _matches(cond, values: list[bytes]) -> bool:
    if cond.present is not None:
        return bool(values) == cond.present
    if not values:
        return False
    value = values[0] if len(values) == 1 else b",".join(values)
    if cond.exact is not None:
        return value == cond.exact
    if cond.prefix is not None:
        return value.startswith(cond.prefix)
    return cond.matcher.fullmatch(value)


_NONE: list = []


def headers_match(conditions, req, index: dict | None = None) -> bool:
    """All conditions hold for the request (Envoy's HeaderMatcher semantics, incl. invert:
    a value condition on an absent header fails even when inverted; only a presence
    condition can be satisfied by absence)."""
    if index is None:
        index = header_index(req)
    for cond in conditions:
        values = index.get(cond.name, _NONE)
        if not values and cond.present is None:
            return False
        if _matches(cond, values) == cond.invert:
            return False
    return True


def query_params_match(conditions, target: bytes) -> bool:
    _, sep, query = target.partition(b"?")
    params: dict[bytes, list[bytes]] = {}
    if sep:
        for pair in query.split(b"&"):
            key, _, value = pair.partition(b"=")
            params.setdefault(unquote_to_bytes(key), []).append(unquote_to_bytes(value))
    for cond in conditions:
        if _matches(cond, params.get(cond.name, [])[:1]) == cond.invert:
            return False
    return True


class Router:
    __slots__ = ("table", "_hosts", "_routes")

    def __init__(self, table: RouteTable) -> None:
        self.table = table
        # host as sent -> its virtual host's compiled routes (None: no virtual host)
        self._hosts: dict[bytes, list[_CompiledRoute] | None] = {}
        self._routes = {id(vh): [_CompiledRoute(r) for r in vh.routes]
                        for vh in table.virtual_hosts}

    def virtual_host(self, host: bytes) -> VirtualHost | None:
        return self._find(host.decode("latin-1").lower())

    def routes_for(self, host: bytes) -> list[_CompiledRoute] | None:
        """The compiled routes of the virtual host for `host` (None: none), cached."""
        try:
            return self._hosts[host]
        except KeyError:
            pass
        vh = self.virtual_host(host)
        routes = self._routes[id(vh)] if vh is not None else None
        if len(self._hosts) < _HOST_CACHE_MAX:
            self._hosts[host] = routes
        return routes

    def _find(self, host: str) -> VirtualHost | None:
        table = self.table
        candidates = [host]
        if ":" in host and not host.endswith("]"):
            candidates.append(host.rsplit(":", 1)[0])
        # Each kind of match over both forms of the host before the next kind: an exact
        # domain must win over a wildcard whether or not the client wrote the port.
        for name in candidates:
            vh = table.exact.get(name)
            if vh is not None:
                return vh
        for name in candidates:
            for suffix, vh in table.suffixes:
                if name.endswith(suffix) and len(name) > len(suffix):
                    return vh
        for name in candidates:
            for prefix, vh in table.prefixes:
                if name.startswith(prefix) and len(name) > len(prefix):
                    return vh
        return table.default

    def route(self, req) -> _CompiledRoute | None:
        """The first route that matches the request head, or None (no virtual host or no
        route)."""
        routes = self._hosts.get(req.host, _UNSEEN)  # routes_for(), without the call
        if routes is _UNSEEN:
            routes = self.routes_for(req.host)
        if routes is None:
            return None
        index = None
        for compiled in routes:
            if compiled.any_path:
                if req.target[:1] == b"/":  # bytes.startswith parses its arguments from a tuple
                    return compiled
                continue
            if compiled.headers and index is None:
                index = header_index(req)
            if compiled.matches(req, index):
                return compiled
        return None
