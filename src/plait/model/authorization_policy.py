"""AuthorizationPolicy (security.istio.io/v1): who may call a workload, and what.

Istio's semantics, enforced by the inbound sidecar: `action` ALLOW (a request must match
some ALLOW policy, if any exists), DENY (a matching request is refused; DENY wins over
ALLOW) or AUDIT (matches are logged). A rule matches when one of its `from` sources, one
of its `to` operations and all of its `when` conditions match; within a source or an
operation every field set must match (any of its values, none of its `not` values). A
policy without rules matches nothing; a rule `{}` matches everything.

Sources: principals (`<trust-domain>/ns/<ns>/sa/<sa>`, `*` at either end as a wildcard),
namespaces, ipBlocks (addresses or CIDRs). Operations: methods, paths (exact, `prefix*`,
`*suffix`, `*`), ports, hosts. Conditions (`when`): `request.headers[<name>]`,
`source.ip`, `remote.ip`, `source.namespace`, `source.principal`, `destination.port`.
Not supported (refused with the field's path): CUSTOM, request principals (JWT) and
other `when` keys.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator

from plait.core.errors import ConfigError
from plait.model.base import IstioModel, Metadata
from plait.model.peer_authentication import LabelSelector

WHEN_KEYS = ("source.ip", "remote.ip", "source.namespace", "source.principal",
             "destination.port")
HEADER_KEY = re.compile(r"request\.headers\[([!#$%&'*+.^_`|~0-9A-Za-z-]+)\]")


def _port_text(value):
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


PortText = Annotated[str, BeforeValidator(_port_text)]


class Source(IstioModel):
    principals: list[str] = Field(default_factory=list)
    not_principals: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    not_namespaces: list[str] = Field(default_factory=list)
    ip_blocks: list[str] = Field(default_factory=list)
    not_ip_blocks: list[str] = Field(default_factory=list)
    remote_ip_blocks: list[str] = Field(default_factory=list)
    not_remote_ip_blocks: list[str] = Field(default_factory=list)


class Operation(IstioModel):
    hosts: list[str] = Field(default_factory=list)
    not_hosts: list[str] = Field(default_factory=list)
    ports: list[PortText] = Field(default_factory=list)
    not_ports: list[PortText] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    not_methods: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list)


class From(IstioModel):
    source: Source


class To(IstioModel):
    operation: Operation


class Condition(IstioModel):
    key: str
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list)


class Rule(IstioModel):
    from_: list[From] = Field(default_factory=list, alias="from")
    to: list[To] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)


class AuthorizationPolicySpec(IstioModel):
    selector: LabelSelector | None = None
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("action")
    @classmethod
    def _no_custom(cls, action: str) -> str:
        if action == "CUSTOM":
            raise ValueError("CUSTOM (external authorization) is not supported")
        return action


class AuthorizationPolicy(IstioModel):
    api_version: Literal["security.istio.io/v1", "security.istio.io/v1beta1"]
    kind: Literal["AuthorizationPolicy"]
    metadata: Metadata
    spec: AuthorizationPolicySpec = AuthorizationPolicySpec()


# -- checks with deeper field paths ----------------------------------------------------------

def _wildcard(text: str, at: str) -> None:
    """Istio's string rule: exact, `prefix*`, `*suffix` or `*`; no `*` elsewhere."""
    if not text:
        raise ConfigError(at, "must not be empty")
    inner = text[1:-1] if len(text) > 1 else ""
    if "*" in inner:
        raise ConfigError(at, f"{text!r}: '*' is allowed only at the start or the end")
    if text.startswith("*") and text.endswith("*") and text != "*":
        raise ConfigError(at, f"{text!r}: use '*' at one end only")


def _ip(text: str, at: str) -> None:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(at, f"{text!r} is not an IP address or CIDR block") from None


def _port(text: str, at: str) -> None:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(at, f"{text!r} is not a port number")


def _check_lists(obj, at: str, rules: dict) -> None:
    for field, check in rules.items():
        values = getattr(obj, field)
        camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), field)
        for k, value in enumerate(values):
            check(value, f"{at}.{camel}[{k}]")


def _check_condition(cond: Condition, at: str) -> None:
    key = cond.key
    if not (key in WHEN_KEYS or HEADER_KEY.fullmatch(key)):
        raise ConfigError(f"{at}.key", f"unsupported key {key!r}; supported: "
                          f"request.headers[<name>], {', '.join(WHEN_KEYS)}")
    if not cond.values and not cond.not_values:
        raise ConfigError(at, "needs values or notValues")
    checker = {"source.ip": _ip, "remote.ip": _ip, "destination.port": _port}.get(key, _wildcard)
    _check_lists(cond, at, {"values": checker, "not_values": checker})


def check_authorization_policy(ap: AuthorizationPolicy) -> None:
    for i, rule in enumerate(ap.spec.rules):
        at = f"spec.rules[{i}]"
        for j, f in enumerate(rule.from_):
            _check_lists(f.source, f"{at}.from[{j}].source", {
                "principals": _wildcard, "not_principals": _wildcard,
                "namespaces": _wildcard, "not_namespaces": _wildcard,
                "ip_blocks": _ip, "not_ip_blocks": _ip,
                "remote_ip_blocks": _ip, "not_remote_ip_blocks": _ip})
        for j, t in enumerate(rule.to):
            _check_lists(t.operation, f"{at}.to[{j}].operation", {
                "ports": _port, "not_ports": _port, "paths": _wildcard,
                "not_paths": _wildcard, "hosts": _wildcard, "not_hosts": _wildcard,
                "methods": _wildcard, "not_methods": _wildcard})
        for j, cond in enumerate(rule.when):
            _check_condition(cond, f"{at}.when[{j}]")
