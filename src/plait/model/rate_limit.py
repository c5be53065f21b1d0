"""RateLimit (plait.io/v1alpha1): token buckets in front of a service.

Each rule is a token bucket refilled with `limit.requests` every `limit.per` and holding
at most `burst` tokens (default: `limit.requests`), as Go's `rate.Limiter` and Envoy's
local rate limit filter work. The `key` says what gets a bucket of its own:

- `service`: one bucket for every request to the service;
- `app`: one bucket per calling application (the caller's `app` label);
- `caller`: one bucket per calling instance (the caller's node id, else its address);
- `method`: one bucket per request method;
- `header:<name>`: one bucket per value of that request header.

`scope: local` gives every instance of the service the whole limit; `scope: global`
makes the limit cluster-wide: the control plane divides it among the live instances
(`plait.controlplane.governance.quota_share`). A request refused by any rule is answered
with `response.status` (429 by default).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from plait.model.base import Host, IstioModel, Metadata
from plait.model.duration import parse_duration
from plait.model.governance_base import (
    GovernanceMatch,
    PlaitApiVersion,
    PositiveDuration,
    check_header_name,
)

PLAIN_KEYS = ("app", "service", "method", "caller")
# Envoy refuses a local rate limit fill interval under 50 ms (local_ratelimit docs).
MIN_PER_SECONDS = 0.05
MAX_REQUESTS = 1_000_000_000


def _check_per(text: str) -> str:
    if parse_duration(text) < MIN_PER_SECONDS:
        raise ValueError("must be at least 50ms")
    return text


class RateLimitValue(IstioModel):
    requests: Annotated[int, Field(ge=1, le=MAX_REQUESTS)]
    per: Annotated[PositiveDuration, AfterValidator(_check_per)]

    @property
    def per_seconds(self) -> float:
        return parse_duration(self.per)


class RateLimitResponse(IstioModel):
    status: Annotated[int, Field(ge=400, le=599)] = 429


class RateLimitRule(IstioModel):
    key: str
    limit: RateLimitValue
    burst: Annotated[int, Field(ge=1, le=MAX_REQUESTS)] | None = None
    scope: Literal["local", "global"] = "local"
    response: RateLimitResponse = Field(default_factory=RateLimitResponse)

    @field_validator("key")
    @classmethod
    def _known_key(cls, text: str) -> str:
        if text in PLAIN_KEYS:
            return text
        if text.startswith("header:"):
            check_header_name(text.removeprefix("header:"))
            return text
        raise ValueError(f"unknown key {text!r}; expected one of {', '.join(PLAIN_KEYS)}, "
                         "header:<name>")  # fmt: skip

    @property
    def bucket_size(self) -> int:
        """Tokens the bucket holds when full: `burst`, else `limit.requests`."""
        return self.burst if self.burst is not None else self.limit.requests


class RateLimitSpec(IstioModel):
    service: Host
    match: GovernanceMatch | None = None
    rules: Annotated[list[RateLimitRule], Field(min_length=1, max_length=64)]


class RateLimit(IstioModel):
    api_version: PlaitApiVersion
    kind: Literal["RateLimit"]
    metadata: Metadata
    spec: RateLimitSpec
