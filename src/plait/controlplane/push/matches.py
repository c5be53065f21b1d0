"""Istio HTTPMatchRequest → Envoy RouteMatch.

Istio and Envoy agree on the meaning of each condition: regexes are RE2 and must match
the whole value, an empty StringMatch on a header means "present", and `withoutHeaders`
is a header match inverted. The pseudo-headers `:method`, `:authority` and `:scheme`
carry Istio's method/authority/scheme matches, as Istio itself does; `:authority` also
carries a sidecar's `match.port` (see `routes`).
"""

from __future__ import annotations

import re

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2


def fill_match(match: rc.RouteMatch, istio) -> None:
    """Fill `match` from an HTTPMatchRequest; None means "everything"."""
    uri = istio.uri if istio is not None else None
    if uri is None or uri.prefix is not None:
        match.prefix = uri.prefix if uri is not None else "/"
    elif uri.exact is not None:
        match.path = uri.exact
    else:
        match.safe_regex.CopyFrom(regex(uri.regex))
    if istio is None:
        return
    if istio.ignore_uri_case:
        match.case_sensitive.value = False
    headers = dict(istio.headers)
    for pseudo in ("method", "authority", "scheme"):
        value = getattr(istio, pseudo)
        if value is not None:
            headers[f":{pseudo}"] = value
    for name in sorted(headers):
        match.headers.append(header_matcher(name, headers[name]))
    for name in sorted(istio.without_headers):
        matcher = header_matcher(name, istio.without_headers[name])
        matcher.invert_match = True
        match.headers.append(matcher)
    for name in sorted(istio.query_params):
        query = match.query_parameters.add(name=name)
        value = istio.query_params[name]
        if value.is_empty:
            query.present_match = True
        else:
            query.string_match.CopyFrom(string_matcher(value))


def port_matcher(host: str, port: int, *, default: bool) -> rc.HeaderMatcher:
    """A request addressed to `host` on `port`: `host:port`, or, when `default` (the
    port is the one a bare `host` goes to), the bare host too. Host names ignore case."""
    pattern = f"(?i){re.escape(host)}" + (f"(:{port})?" if default else f":{port}")
    return rc.HeaderMatcher(name=":authority",
                            string_match=string_pb2.StringMatcher(safe_regex=regex(pattern)))


def header_matcher(name: str, value) -> rc.HeaderMatcher:
    matcher = rc.HeaderMatcher(name=name)
    if value.is_empty:
        matcher.present_match = True
    else:
        matcher.string_match.CopyFrom(string_matcher(value))
    return matcher


def string_matcher(value) -> string_pb2.StringMatcher:
    if value.exact is not None:
        return string_pb2.StringMatcher(exact=value.exact)
    if value.prefix is not None:
        return string_pb2.StringMatcher(prefix=value.prefix)
    return string_pb2.StringMatcher(safe_regex=regex(value.regex))


def regex(pattern: str) -> regex_pb2.RegexMatcher:
    # RE2 is the engine in Envoy and gRPC alike; the engine field itself is deprecated.
    return regex_pb2.RegexMatcher(regex=pattern)
