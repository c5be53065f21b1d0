"""Header, query-parameter and string matchers, compiled from Envoy's matcher messages.

Shared by routes and filters (fault, later authorization and rate limits), so a header
condition means the same thing everywhere. Regexes are compiled here, once; an invalid one
is a ConfigError naming the field. A string match other than a plain exact or prefix one
(suffix, contains, or any with `ignore_case`) becomes a `Literal`, which has a regex's
`fullmatch` and costs a byte operation.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2

from plait.core.errors import ConfigError
from plait.core.regex import Regex
from plait.dataplane.config import HeaderMatch


def regex(pattern: bytes, path: str, *, captures: bool = False) -> Regex:
    """`pattern` compiled by RE2 for matching (plait.core.regex), or a ConfigError with
    RE2's reason."""
    try:
        return Regex(pattern, captures=captures)
    except ValueError as exc:
        raise ConfigError(path, f"invalid regex (RE2): {exc}") from None


class Literal:
    """Envoy's exact, prefix, suffix and contains string matches, with the `fullmatch` of
    a `Regex`. `ignore_case` folds ASCII letters only, as Envoy does."""

    __slots__ = ("kind", "text", "ignore_case")

    def __init__(self, kind: str, text: bytes, ignore_case: bool = False) -> None:
        self.kind = kind
        self.text = text.lower() if ignore_case else text
        self.ignore_case = ignore_case

    def fullmatch(self, value: bytes) -> bool:
        if self.ignore_case:
            value = value.lower()
        kind = self.kind
        if kind == "suffix":
            return value.endswith(self.text)
        if kind == "contains":
            return value.find(self.text) >= 0  # `in` first tries the text as an int
        if kind == "prefix":
            return value.startswith(self.text)
        return value == self.text

    def __repr__(self) -> str:
        return f"Literal({self.kind!r}, {self.text!r}, ignore_case={self.ignore_case})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Literal) and (other.kind, other.text, other.ignore_case) \
            == (self.kind, self.text, self.ignore_case)

    def __hash__(self) -> int:
        return hash((self.kind, self.text, self.ignore_case))


def string_match(sm, name: bytes, invert: bool, path: str) -> HeaderMatch:
    which = sm.WhichOneof("match_pattern")
    ignore_case = sm.ignore_case
    if which == "safe_regex":
        # Envoy: ignore_case "has no effect for the safe_regex match".
        return HeaderMatch(name=name, matcher=regex(sm.safe_regex.regex.encode(), path),
                           invert=invert)
    if which not in ("exact", "prefix", "suffix", "contains"):
        raise ConfigError(path, f"unsupported string match {which!r}")
    text = getattr(sm, which).encode()
    if which == "exact" and not ignore_case:
        return HeaderMatch(name=name, exact=text, invert=invert)
    if which == "prefix" and not ignore_case:
        return HeaderMatch(name=name, prefix=text, invert=invert)
    return HeaderMatch(name=name, matcher=Literal(which, text, ignore_case), invert=invert)


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
        return HeaderMatch(name=name, matcher=regex(h.safe_regex_match.regex.encode(),
                                                     f"{path}.safe_regex_match.regex"),
                           invert=inv)
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
