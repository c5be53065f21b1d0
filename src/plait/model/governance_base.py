"""Pieces shared by Plait's own governance kinds (RateLimit, CircuitBreaker, Degrade,
AlarmRule, HealthCheck, FailureRateEjection), which Istio has no schema for.

They follow the Istio kinds' conventions exactly (camelCase aliases, unknown fields
rejected, durations as Go strings, errors with field paths) so one parser, one store and
one CLI serve all kinds alike. Their apiVersion is `plait.io/v1alpha1`. Request matching
is deliberately smaller than a VirtualService's (exact/prefix paths, one header, no
regexes), because these rules are evaluated on every request of the protected service.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from plait.model.base import Duration, IstioModel
from plait.model.duration import parse_duration

PlaitApiVersion = Literal["plait.io/v1alpha1"]

# RFC 9110 5.1 / 5.6.2: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 9.1: a method is a token too; upper case by convention (and gRPC/Dubbo use paths).
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]*")


def check_header_name(text: str) -> str:
    if len(text) > 256 or not _TOKEN.fullmatch(text):
        raise ValueError("a header name must be an HTTP token (letters, digits, '-', ...)")
    return text


def _check_header_value(text: str) -> str:
    if any(c in text for c in "\r\n\0"):
        raise ValueError("a header value must not contain CR, LF or NUL")
    return text


def _check_method(text: str) -> str:
    if len(text) > 64 or not _METHOD.fullmatch(text):
        raise ValueError("a method must be an upper-case token such as GET or POST")
    return text


def _check_positive(text: str) -> str:
    if parse_duration(text) <= 0:
        raise ValueError("must be longer than 0")
    return text


HeaderName = Annotated[str, AfterValidator(check_header_name)]
HeaderValue = Annotated[str, AfterValidator(_check_header_value)]
Method = Annotated[str, AfterValidator(_check_method)]
PositiveDuration = Annotated[Duration, AfterValidator(_check_positive)]
Path = Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^/\S*$")]


class PathMatch(IstioModel):
    """A request path, exactly or by prefix; exactly one of the two."""

    exact: Path | None = None
    prefix: Path | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> PathMatch:
        if (self.exact is None) == (self.prefix is None):
            raise ValueError("set exactly one of exact, prefix")
        return self


class HeaderMatch(IstioModel):
    """A request header by name; with `value`, only that exact value matches."""

    name: HeaderName
    value: HeaderValue | None = None


class RequestMatch(IstioModel):
    """Which requests of the service a rule covers; unset fields match everything."""

    method: Method | None = None
    path: PathMatch | None = None


class GovernanceMatch(RequestMatch):
    """`RequestMatch` plus a header and the calling app (the caller's `app` label)."""

    header: HeaderMatch | None = None
    caller: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^\S+$")] | None = None
