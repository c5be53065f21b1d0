"""HealthCheck (plait.io/v1alpha1): active health checks of a service's endpoints.

Istio's DestinationRule has outlier detection (passive: judged on real requests) but no
active health check, which Envoy's `Cluster.health_checks` provides. With this kind every
caller's sidecar probes each endpoint of `host` (all its subsets, or only `subset`) every
`interval`: an HTTP GET of `http.path`, healthy when the status falls in
`http.expectedStatuses`, or a plain TCP connect (`tcp: {}`). A probe that takes longer
than `timeout` fails. After `unhealthyThreshold` failures in a row the endpoint takes no
more traffic from that caller; after `healthyThreshold` passes in a row it is back. So an
endpoint that stops answering its health path is avoided before a real request fails.

Status ranges are Envoy's `Int64Range`: `end` is exclusive, so `{start: 200, end: 400}`
is 200-399, the default. Defaults for the rest follow Envoy's documentation examples
(`interval` 5s, `timeout` 1s) and take a host out after two failed checks, back after
one passed check.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from plait.model.base import Host, IstioModel, Metadata
from plait.model.governance_base import Path, PlaitApiVersion, PositiveDuration

# An HTTP authority: a host name or address, optionally with a port; no path, no spaces.
Authority = Annotated[str, Field(min_length=1, max_length=261, pattern=r"^[^\s/?#@]+$")]
MAX_THRESHOLD = 1000


class StatusRange(IstioModel):
    """Statuses `start` to `end - 1` (Envoy's half-open Int64Range)."""

    start: Annotated[int, Field(ge=100, le=599)]
    end: Annotated[int, Field(ge=101, le=600)]

    @model_validator(mode="after")
    def _ordered(self) -> StatusRange:
        if self.end <= self.start:
            raise ValueError("end must be above start (end is exclusive: "
                             "{start: 200, end: 300} is 200-299)")
        return self


def _default_statuses() -> list[StatusRange]:
    return [StatusRange(start=200, end=400)]


class HttpCheck(IstioModel):
    path: Path
    host: Authority | None = None  # the Host header; default: the service's host
    expected_statuses: Annotated[list[StatusRange], Field(min_length=1, max_length=16)] = (
        Field(default_factory=_default_statuses))


class TcpCheck(IstioModel):
    """A plain connect: healthy when the connection opens."""


class HealthCheckSpec(IstioModel):
    host: Host
    subset: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^\S+$")] | None = None
    http: HttpCheck | None = None
    tcp: TcpCheck | None = None
    interval: PositiveDuration = "5s"
    timeout: PositiveDuration = "1s"
    unhealthy_threshold: Annotated[int, Field(ge=1, le=MAX_THRESHOLD)] = 2
    healthy_threshold: Annotated[int, Field(ge=1, le=MAX_THRESHOLD)] = 1

    @model_validator(mode="after")
    def _one_checker(self) -> HealthCheckSpec:
        if (self.http is None) == (self.tcp is None):
            raise ValueError("set exactly one of http, tcp")
        return self


class HealthCheck(IstioModel):
    api_version: PlaitApiVersion
    kind: Literal["HealthCheck"]
    metadata: Metadata
    spec: HealthCheckSpec
