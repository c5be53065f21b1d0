"""VirtualService (networking.istio.io/v1): how requests for a host are routed.

Shapes follow Istio's API so existing YAML carries over; `gateways`, `corsPolicy` and
`exportTo` are accepted and stored, though the sidecar does not act on them yet. HTTP
routes only: `tcp` and `tls` routes are rejected as unknown fields rather than ignored.
Weights: with more than one destination and any weight set, the weights must total 100
(Istio's rule); with several destinations and no weights at all, traffic is split evenly.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from plait.model.base import (
    Duration,
    Host,
    IstioModel,
    Metadata,
    Percent,
    PortNumber,
    PortSelector,
    Regex,
    StringMatch,
)

# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on conditions, which Istio passes through.
RETRY_ON = frozenset(
    {
        "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
        "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
        "retriable-headers", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
        "internal", "resource-exhausted", "unavailable",
    }
)  # fmt: skip


class Destination(IstioModel):
    host: Host
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(IstioModel):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class Headers(IstioModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPMatchRequest(IstioModel):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: PortNumber | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    source_namespace: str | None = None

    @field_validator("uri", "scheme", "method", "authority")
    @classmethod
    def _needs_value(cls, match: StringMatch | None) -> StringMatch | None:
        if match is not None and match.is_empty:
            raise ValueError("set one of exact, prefix, regex")
        return match


class HTTPRouteDestination(IstioModel):
    destination: Destination
    weight: Annotated[int, Field(ge=0, le=100)] | None = None
    headers: Headers | None = None


class HTTPRedirect(IstioModel):
    uri: str | None = None
    authority: str | None = None
    port: PortNumber | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: Annotated[int, Field(ge=300, le=399)] | None = None  # Istio default 301


class RegexRewrite(IstioModel):
    match: Regex
    rewrite: str


class HTTPRewrite(IstioModel):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None

    @model_validator(mode="after")
    def _one_uri(self) -> HTTPRewrite:
        if self.uri is not None and self.uri_regex_rewrite is not None:
            raise ValueError("set only one of uri, uriRegexRewrite")
        return self


class HTTPBody(IstioModel):
    string: str | None = None
    bytes: str | None = None  # base64, as in Istio

    @model_validator(mode="after")
    def _one_body(self) -> HTTPBody:
        if (self.string is None) == (self.bytes is None):
            raise ValueError("set exactly one of string, bytes")
        return self


class HTTPDirectResponse(IstioModel):
    status: Annotated[int, Field(ge=200, le=599)]
    body: HTTPBody | None = None


class HTTPRetry(IstioModel):
    attempts: Annotated[int, Field(ge=0)] | None = None  # unset: Istio's default policy
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None  # unset: true, as in Istio

    @field_validator("retry_on")
    @classmethod
    def _known_conditions(cls, text: str | None) -> str | None:
        if text is None:
            return None
        for token in (t.strip() for t in text.split(",")):
            if token.isdigit() and 100 <= int(token) <= 599:
                continue
            if token not in RETRY_ON:
                raise ValueError(f"unknown retry condition {token!r}")
        return text


class FaultDelay(IstioModel):
    fixed_delay: Duration
    percentage: Percent | None = None


class FaultAbort(IstioModel):
    http_status: Annotated[int, Field(ge=200, le=599)] | None = None
    grpc_status: str | None = None
    percentage: Percent | None = None

    @model_validator(mode="after")
    def _one_status(self) -> FaultAbort:
        if (self.http_status is None) == (self.grpc_status is None):
            raise ValueError("set exactly one of httpStatus, grpcStatus")
        return self


class HTTPFaultInjection(IstioModel):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _something(self) -> HTTPFaultInjection:
        if self.delay is None and self.abort is None:
            raise ValueError("set delay, abort or both")
        return self


class CorsPolicy(IstioModel):
    allow_origins: list[StringMatch] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None


class HTTPRoute(IstioModel):
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: Percent | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None

    @model_validator(mode="after")
    def _one_action(self) -> HTTPRoute:
        actions = [n for n, v in (("route", self.route), ("redirect", self.redirect),
                                  ("directResponse", self.direct_response)) if v]  # fmt: skip
        if len(actions) != 1:
            raise ValueError("set exactly one of route, redirect, directResponse")
        return self


class VirtualServiceSpec(IstioModel):
    hosts: Annotated[list[Host], Field(min_length=1)]
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)


class VirtualService(IstioModel):
    api_version: Literal[
        "networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"
    ]
    kind: Literal["VirtualService"]
    metadata: Metadata
    spec: VirtualServiceSpec
