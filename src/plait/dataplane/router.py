"""Route matching: Host header → virtual host → first matching route → cluster.

A `Router` is compiled once from a `RouteTable`; path and header conditions become bytes
and compiled regexes so that a request is matched with `startswith`, `==` and dict
lookups. Host lookups are memoised per router (bounded), since a sidecar sees few hosts.
"""

from __future__ import annotations

import random
import re
from bisect import bisect_right
from itertools import accumulate

from plait.dataplane.config import PathMatchKind, Route, RouteTable, VirtualHost

_HOST_CACHE_MAX = 1024


class _CompiledRoute:
    __slots__ = ("route", "kind", "value", "regex", "lower", "headers", "clusters", "cum",
                 "total")

    def __init__(self, route: Route) -> None:
        self.route = route
        self.kind = route.path_kind
        self.lower = not route.case_sensitive
        value = route.path.encode()
        self.value = value.lower() if self.lower else value
        self.regex = (re.compile(value, re.IGNORECASE if self.lower else 0)
                      if self.kind is PathMatchKind.REGEX else None)
        self.headers = route.headers
        self.clusters = [w.name for w in route.weighted_clusters]
        self.cum = list(accumulate(w.weight for w in route.weighted_clusters))
        self.total = self.cum[-1] if self.cum else 0

    def matches(self, target: bytes, headers: list) -> bool:
        kind = self.kind
        if self.lower:
            target = target.lower()
        if kind is PathMatchKind.PREFIX:
            if not target.startswith(self.value):
                return False
        else:
            path = target.split(b"?", 1)[0]
            if kind is PathMatchKind.EXACT:
                if path != self.value:
                    return False
            elif self.regex.fullmatch(path) is None:
                return False
        if self.headers:
            return _headers_match(self.headers, headers)
        return True

    def pick_cluster(self) -> str:
        if not self.total:
            return self.route.cluster
        return self.clusters[bisect_right(self.cum, random.random() * self.total)]


def _headers_match(conditions, headers: list) -> bool:
    for cond in conditions:
        values = [v for n, v in headers if n == cond.name]
        if cond.present is not None:
            ok = bool(values) == cond.present
        elif not values:
            ok = False
        else:
            value = b",".join(values)
            ok = value == cond.exact if cond.exact is not None else value.startswith(cond.prefix)
        if ok == cond.invert:
            return False
    return True


class Router:
    __slots__ = ("table", "_hosts", "_routes")

    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self._hosts: dict[bytes, VirtualHost | None] = {}
        self._routes = {id(vh): [_CompiledRoute(r) for r in vh.routes]
                        for vh in table.virtual_hosts}

    def virtual_host(self, host: bytes) -> VirtualHost | None:
        try:
            return self._hosts[host]
        except KeyError:
            pass
        vh = self._find(host.decode("latin-1").lower())
        if len(self._hosts) < _HOST_CACHE_MAX:
            self._hosts[host] = vh
        return vh

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

    def route(self, host: bytes, target: bytes, headers: list) -> _CompiledRoute | None:
        """The first route that matches, or None (no virtual host or no route)."""
        vh = self.virtual_host(host)
        if vh is None:
            return None
        for compiled in self._routes[id(vh)]:
            if compiled.matches(target, headers):
                return compiled
        return None
