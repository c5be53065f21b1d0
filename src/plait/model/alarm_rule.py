"""AlarmRule (plait.io/v1alpha1): when the control plane raises an alarm, and where to.

Exactly one condition:
- `errorRate`: the share of failed requests to `service`, summed over every sidecar
  that reported calling it within `window`, reaches `threshold` (0 < t <= 1) while at
  least `minRequests` requests were seen in that window;
- `events`: a governance event of one of `types` arrives (for `service`, or any).
Each firing is POSTed as JSON to `webhook.url`; the same condition fires again only
after `cooldown`. Event type names are shared with the events API, so they live here.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from plait.model.base import Duration, Host, IstioModel, Metadata
from plait.model.duration import parse_duration
from plait.model.governance_base import HeaderName, HeaderValue, PlaitApiVersion, PositiveDuration

EventType = Literal["ejection", "return", "breakerOpen", "breakerClose", "degrade", "rateLimited",
                    "denied"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

# Telemetry is kept for an hour (plait.controlplane.alarms.window); a longer window
# could never be filled.
MAX_WINDOW_SECONDS = 3600.0


def _check_window(text: str) -> str:
    if parse_duration(text) > MAX_WINDOW_SECONDS:
        raise ValueError("must be at most 1h")
    return text


def _check_url(text: str) -> str:
    if len(text) > 2048 or any(c.isspace() for c in text):
        raise ValueError("must be a URL without spaces, at most 2048 characters")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return text


class ErrorRateCondition(IstioModel):
    service: Host
    threshold: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    window: Annotated[PositiveDuration, AfterValidator(_check_window)] = "1m"
    min_requests: Annotated[int, Field(ge=1)] = 10


class EventCondition(IstioModel):
    types: Annotated[list[EventType], Field(min_length=1)]
    service: Host | None = None


class Webhook(IstioModel):
    url: Annotated[str, AfterValidator(_check_url)]
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)


class AlarmRuleSpec(IstioModel):
    error_rate: ErrorRateCondition | None = None
    events: EventCondition | None = None
    webhook: Webhook
    cooldown: Duration = "1m"

    @model_validator(mode="after")
    def _one_condition(self) -> AlarmRuleSpec:
        if (self.error_rate is None) == (self.events is None):
            raise ValueError("set exactly one of errorRate, events")
        return self


class AlarmRule(IstioModel):
    api_version: PlaitApiVersion
    kind: Literal["AlarmRule"]
    metadata: Metadata
    spec: AlarmRuleSpec
