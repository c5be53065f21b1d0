"""Degrade (plait.io/v1alpha1): a canned answer instead of an error.

When a request of `service` (narrowed by `match`) is refused because a breaker is open
(`circuitOpen`) or a rate limit refused it (`rateLimited`), and that event is listed in
`when`, the sidecar answers with `fallback` (status, headers, body) instead of the error
status. The answer still carries `x-plait-error` so the cause stays visible.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from plait.model.base import Host, IstioModel, Metadata
from plait.model.governance_base import GovernanceMatch, HeaderName, HeaderValue, PlaitApiVersion

# The fallback travels in every push to the service's callers; keep it a small answer.
MAX_BODY = 64 * 1024

Trigger = Literal["circuitOpen", "rateLimited"]


class Fallback(IstioModel):
    status: Annotated[int, Field(ge=200, le=599)]
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    body: Annotated[str, Field(max_length=MAX_BODY)] = ""


class DegradeSpec(IstioModel):
    service: Host
    match: GovernanceMatch | None = None
    when: Annotated[list[Trigger], Field(min_length=1)]
    fallback: Fallback


class Degrade(IstioModel):
    api_version: PlaitApiVersion
    kind: Literal["Degrade"]
    metadata: Metadata
    spec: DegradeSpec
