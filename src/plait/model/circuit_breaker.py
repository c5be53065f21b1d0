"""CircuitBreaker (plait.io/v1alpha1): Sentinel-style breakers on a service's requests.

Istio's circuit breaking is connection-pool limits and outlier ejection (both in
DestinationRule); this kind adds what Sentinel's degrade rules do. Requests to `service`
(narrowed by `match`) are counted over `statWindow`; once at least `minRequests` were seen
and the `strategy` crosses `threshold`, the breaker opens and requests fail fast
(`circuit_open`, or a Degrade fallback) for `openDuration`. Then up to
`halfOpenRequests` probes go through: if they succeed (and, for slowRequestRatio, are not
slow) the breaker closes, otherwise it opens again.

- `slowRequestRatio`: share of requests slower than `slowRequestThreshold` (0 < t <= 1);
- `errorRatio`: share of failed requests (0 < t <= 1);
- `errorCount`: number of failed requests in the window (a whole number >= 1).
Defaults follow Sentinel: `minRequests` 5, `statWindow` 1s.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from plait.model.base import Host, IstioModel, Metadata
from plait.model.governance_base import PlaitApiVersion, PositiveDuration, RequestMatch

Strategy = Literal["slowRequestRatio", "errorRatio", "errorCount"]


class CircuitBreakerSpec(IstioModel):
    service: Host
    match: RequestMatch | None = None
    strategy: Strategy
    threshold: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    slow_request_threshold: PositiveDuration | None = None
    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 5
    stat_window: PositiveDuration = "1s"
    open_duration: PositiveDuration
    half_open_requests: Annotated[int, Field(ge=1, le=1000)] = 1


class CircuitBreaker(IstioModel):
    api_version: PlaitApiVersion
    kind: Literal["CircuitBreaker"]
    metadata: Metadata
    spec: CircuitBreakerSpec
