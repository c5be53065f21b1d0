"""FailureRateEjection (plait.io/v1alpha1): take out an endpoint that fails far more often
than the rest of its service.

A DestinationRule's `outlierDetection` ejects an endpoint after errors in a row; one that
fails every other request never has two in a row and is never caught. With this kind
every caller's sidecar judges each endpoint of `host` (all its subsets, or only `subset`)
over a sliding `window`: an endpoint that served at least `minRequests` requests, of which
at least `floorPercent` failed (5xx or no response), and whose failure rate is at least
`ratio` times that of the other endpoints together, is ejected. Nobody is judged until
`minHosts` endpoints have served `minRequests` in the window, so a service that fails as
a whole (a bad release everywhere, a dependency down) has no outlier and keeps its
endpoints. How long an ejection lasts and how many endpoints may be out at once are the
DestinationRule's `outlierDetection` (`baseEjectionTime`, `maxEjectionPercent`), else
Envoy's defaults (30 s, growing with each ejection; 10%, but always one).
`enforcingPercent` is the chance that an endpoint found is ejected (Envoy's
`enforcing_failure_percentage`): 100, the default, every time; less, to bring a rule in
gradually (one spared is judged again a whole window later); 0 turns the rule off.

It travels as Envoy's `failure_percentage_*` fields; `floorPercent` is a whole percent
because Envoy's `failure_percentage_threshold` is. The defaults judge from ten requests in
thirty seconds, at twice the rest's rate and a fifth of requests failing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from plait.model.base import Host, IstioModel, Metadata
from plait.model.governance_base import PlaitApiVersion, PositiveDuration

MIN_WINDOW, MAX_WINDOW = 1.0, 3600.0  # seconds; checked in governance_checks


class FailureRateEjectionSpec(IstioModel):
    host: Host
    subset: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^\S+$")] | None = None
    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    ratio: Annotated[float, Field(ge=1, le=1000, allow_inf_nan=False)] = 2.0
    floor_percent: Annotated[int, Field(ge=0, le=100)] = 20
    window: PositiveDuration = "30s"
    min_hosts: Annotated[int, Field(ge=1, le=1000)] = 2
    enforcing_percent: Annotated[int, Field(ge=0, le=100)] = 100


class FailureRateEjection(IstioModel):
    api_version: PlaitApiVersion
    kind: Literal["FailureRateEjection"]
    metadata: Metadata
    spec: FailureRateEjectionSpec
