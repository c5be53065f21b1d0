"""Building blocks shared by the Istio-shaped resources.

Every model is pydantic v2 with snake_case attributes and the camelCase names of Istio's
YAML as aliases, so `model_dump(by_alias=True)` gives Istio YAML back. Unknown fields are
rejected: a misspelt `retires:` silently ignored is an outage nobody can explain.
Single-field rules (ranges, regexes, durations) live on the fields; rules across fields
of one object live in `model_validator`s; rules that need a deeper field path live in
`plait.model.checks`.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from plait.core.regex import re2_error
from plait.model.duration import parse_duration

# Kubernetes object names: RFC 1123 subdomain (what kubectl would accept for Istio kinds).
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class IstioModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _check_regex(text: str) -> str:
    reason = re2_error(text)  # what Envoy, gRPC and the sidecar compile and match with
    if reason is not None:
        raise ValueError(f"regex does not compile (RE2): {reason}")
    return text


def _check_host(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError("a host must be a non-empty name without spaces")
    return text


def _check_name(text: str) -> str:
    if len(text) > 253 or not _NAME.fullmatch(text):
        raise ValueError(
            "must be a lower-case RFC 1123 name (a-z, 0-9, '-', '.'), at most 253 characters"
        )
    return text


def _check_namespace(text: str) -> str:
    if len(text) > 63 or not _NAMESPACE.fullmatch(text):
        raise ValueError(
            "must be a lower-case RFC 1123 label (a-z, 0-9, '-'), at most 63 characters"
        )
    return text


# A Go/Istio duration string, kept as written; convert with `parse_duration`.
Duration = Annotated[str, AfterValidator(_check_duration)]
Regex = Annotated[str, AfterValidator(_check_regex)]
Host = Annotated[str, AfterValidator(_check_host)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]


class Metadata(IstioModel):
    name: Annotated[str, AfterValidator(_check_name)]
    namespace: Annotated[str, AfterValidator(_check_namespace)] = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class StringMatch(IstioModel):
    """Istio's StringMatch: at most one of exact, prefix, regex.

    An empty match is only meaningful for headers and query parameters, where it means
    "present"; the fields that need a value say so themselves.
    """

    exact: str | None = None
    prefix: str | None = None
    regex: Regex | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StringMatch:
        if sum(v is not None for v in (self.exact, self.prefix, self.regex)) > 1:
            raise ValueError("set only one of exact, prefix, regex")
        return self

    @property
    def is_empty(self) -> bool:
        return self.exact is None and self.prefix is None and self.regex is None


class Percent(IstioModel):
    value: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]


class PortSelector(IstioModel):
    number: PortNumber


class WorkloadSelector(IstioModel):
    labels: dict[str, str] = Field(default_factory=dict)
