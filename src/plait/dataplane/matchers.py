"""Header, query-parameter and string matchers, compiled from Envoy's matcher messages.

Shared by routes and filters (fault, later authorization and rate limits), so a header
condition means the same thing everywhere. Regexes are compiled here, once; an invalid one
is a ConfigError naming the field.
"""

from __future__ import annotations

import re

from envoy.config.route.v3 import route_pb2

from plait.core.errors import ConfigError
from plait.core.regex import Regex, re2_error
from plait.dataplane.config import HeaderMatch


def regex(pattern: bytes, path: str, *, captures: bool = False) -> Regex:
    """`pattern` compiled by RE2 for matching (plait.core.regex), or a ConfigError with
    RE2's reason."""
    reason = re2_error(pattern)
    if reason is not None:
        raise ConfigError(path, f"invalid regex (RE2): {reason}")
    return Regex(pattern, captures=captures)


def string_match(sm, name: bytes, invert: bool, path: str) -> HeaderMatch:
    which = sm.WhichOneof("match_pattern")
    flags_ci = sm.ignore_case
    if which == "exact" and not flags_ci:
        return HeaderMatch(name=name, exact=sm.exact.encode(), invert=invert)
    if which == "prefix" and not flags_ci:
        return HeaderMatch(name=name, prefix=sm.prefix.encode(), invert=invert)
    if which == "safe_regex":
        # Envoy: ignore_case "has no effect for the safe_regex match".
        return HeaderMatch(name=name, regex=regex(sm.safe_regex.regex.encode(), path),
                           invert=invert)
    if which in ("exact", "prefix", "suffix", "contains"):
        text = re.escape(getattr(sm, which).encode())
        source = {"exact": text, "prefix": text + b".*", "suffix": b".*" + text,
                  "contains": b".*" + text + b".*"}[which]
    else:
        raise ConfigError(path, f"unsupported string match {which!r}")
    if flags_ci:
        source = b"(?i)" + source
    return HeaderMatch(name=name, regex=regex(source, path), invert=invert)


def header_match(h: route_pb2.HeaderMatcher, path: str) -> HeaderMatch:
    name = h.name.lower().encode()
    kind = h.WhichOneof("header_match_specifier")
    inv = h.invert_match
    if kind == "present_match":
        return HeaderMatch(name=name, present=h.present_match, invert=inv)
    if kind == "exact_match":
        return HeaderMatch(name=name, exact=h.exact_match.encode(), invert=inv)
    if kind == "prefix_match":
        return HeaderMatch(name=name, prefix=h.prefix_match.encode(), invert=inv)
    if kind == "safe_regex_match":
        return HeaderMatch(name=name, regex=regex(h.safe_regex_match.regex.encode(),
                                                   f"{path}.safe_regex_match.regex"), invert=inv)
    if kind == "string_match":
        return string_match(h.string_match, name, inv, f"{path}.string_match")
    if kind is None:
        return HeaderMatch(name=name, present=True, invert=inv)
    raise ConfigError(path, f"unsupported header match {kind!r}")


def query_match(q, path: str) -> HeaderMatch:
    name = q.name.encode()
    if not name:
        raise ConfigError(f"{path}.name", "required")
    if q.HasField("string_match"):
        return string_match(q.string_match, name, False, f"{path}.string_match")
    return HeaderMatch(name=name, present=q.present_match if q.HasField("present_match") else True)
