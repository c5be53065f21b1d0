"""The resource kinds, their short names, and how a resource is identified and dumped.

A resource is identified by (kind, namespace, name), as in Kubernetes. Kind names typed by
people (`vs`, `virtualservices`, `VirtualService`) resolve to the canonical kind here, once,
for the API and the CLI alike.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Union

from plait.core.errors import ConfigError
from plait.model.alarm_rule import AlarmRule
from plait.model.authorization_policy import AuthorizationPolicy
from plait.model.circuit_breaker import CircuitBreaker
from plait.model.degrade import Degrade
from plait.model.destination_rule import DestinationRule
from plait.model.failure_rate_ejection import FailureRateEjection
from plait.model.health_check import HealthCheck
from plait.model.peer_authentication import PeerAuthentication
from plait.model.rate_limit import RateLimit
from plait.model.service_entry import ServiceEntry
from plait.model.virtual_service import VirtualService

Resource = Union[VirtualService, DestinationRule, ServiceEntry, PeerAuthentication,
                 AuthorizationPolicy,
                 RateLimit, CircuitBreaker, Degrade, AlarmRule,
                 HealthCheck, FailureRateEjection]  # fmt: skip  (plait.io kinds)

KINDS: dict[str, type[Resource]] = {
    "VirtualService": VirtualService,
    "DestinationRule": DestinationRule,
    "ServiceEntry": ServiceEntry,
    "PeerAuthentication": PeerAuthentication,
    "AuthorizationPolicy": AuthorizationPolicy,
    "RateLimit": RateLimit,
    "CircuitBreaker": CircuitBreaker,
    "Degrade": Degrade,
    "AlarmRule": AlarmRule,
    "HealthCheck": HealthCheck,
    "FailureRateEjection": FailureRateEjection,
}

_SHORT = {"vs": "VirtualService", "dr": "DestinationRule", "se": "ServiceEntry",
          "pa": "PeerAuthentication", "ap": "AuthorizationPolicy",
          "rl": "RateLimit", "cb": "CircuitBreaker", "degrade": "Degrade", "alarm": "AlarmRule",
          "hc": "HealthCheck", "fre": "FailureRateEjection"}
_ALIASES = {
    **_SHORT,
    **{k.lower(): k for k in KINDS},
    **{k.lower() + "s": k for k in KINDS},
    "serviceentries": "ServiceEntry",
    "authorizationpolicies": "AuthorizationPolicy",
}


class ResourceKey(NamedTuple):
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def resolve_kind(text: str) -> str:
    """'vs', 'VirtualServices', 'virtualservice' → 'VirtualService'; else ConfigError."""
    kind = _ALIASES.get(text.lower())
    if kind is None:
        known = ", ".join(f"{k} ({s})" for s, k in _SHORT.items())
        raise ConfigError("kind", f"unknown kind {text!r}; expected one of {known}")
    return kind


def key_of(resource: Resource) -> ResourceKey:
    return ResourceKey(resource.kind, resource.metadata.namespace, resource.metadata.name)


def to_dict(resource: Resource) -> dict[str, Any]:
    """The resource as Istio YAML would have it: camelCase, without unset fields.

    Parsing the result gives an equal resource back.
    """
    doc = resource.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    doc["apiVersion"] = resource.api_version
    doc["kind"] = resource.kind
    doc.setdefault("metadata", {})["namespace"] = resource.metadata.namespace
    return doc
