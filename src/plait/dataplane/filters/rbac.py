"""Authorization (`envoy.filters.http.rbac`): allow or deny requests by who calls and what.

Envoy's RBAC filter config (`envoy.extensions.filters.http.rbac.v3.RBAC`) is compiled once
into plain matcher objects; a request walks them with attribute reads and byte compares.
One filter holds one action:

    ALLOW  the request passes only if some policy matches; otherwise 403
    DENY   the request is refused (403) if some policy matches
    LOG    nothing is refused; a matching policy is counted and named in the access log

A policy matches when one of its `permissions` (what: method, path, header, port) and one
of its `principals` (who: the peer's SPIFFE ID from mTLS, its address, a header) match.
Istio's order (any DENY match refuses; else, if ALLOW policies exist, one must match) is
the order of the filters in the chain: the control plane puts the DENY filter first.
`shadow_rules` are evaluated for their counters only, as in Envoy.

A refusal answers 403 with `x-plait-error: denied`, counts `rbac_denied_total` on the
listener and records a `denied` governance event (counted per second, like rate limits).
"""

from __future__ import annotations

import enum
import ipaddress
import time
from dataclasses import dataclass

from envoy.config.rbac.v3 import rbac_pb2 as config_pb2
from envoy.extensions.filters.http.rbac.v3.rbac_pb2 import RBAC

from plait.core.errors import ConfigError, Reason
from plait.dataplane.config import HeaderMatch
from plait.dataplane.filters import circuit_breaker
from plait.dataplane.matchers import header_match, string_match
from plait.dataplane.router import headers_match

NAME = "envoy.filters.http.rbac"
MAX_DEPTH = 16  # nesting of and/or/not; deeper config is refused rather than recursed


class Action(enum.Enum):
    ALLOW = 0
    DENY = 1
    LOG = 2


# -- matchers: each has `matches(exchange) -> bool` --------------------------------------

@dataclass(frozen=True, slots=True)
class Always:
    def matches(self, ex) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple

    def matches(self, ex) -> bool:
        for item in self.items:
            if item.matches(ex):
                return True
        return False


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple

    def matches(self, ex) -> bool:
        for item in self.items:
            if not item.matches(ex):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Not:
    item: object

    def matches(self, ex) -> bool:
        return not self.item.matches(ex)


@dataclass(frozen=True, slots=True)
class Header:
    condition: HeaderMatch

    def matches(self, ex) -> bool:
        return headers_match((self.condition,), ex.request)


def _text_matches(cond: HeaderMatch, value: bytes) -> bool:
    if cond.exact is not None:
        return (value == cond.exact) != cond.invert
    if cond.prefix is not None:
        return value.startswith(cond.prefix) != cond.invert
    return cond.matcher.fullmatch(value) != cond.invert


@dataclass(frozen=True, slots=True)
class UrlPath:
    """The path without its query string (Envoy's `url_path`)."""

    condition: HeaderMatch

    def matches(self, ex) -> bool:
        return _text_matches(self.condition, ex.request.target.partition(b"?")[0])


@dataclass(frozen=True, slots=True)
class DestinationPort:
    low: int
    high: int  # inclusive

    def matches(self, ex) -> bool:
        transport = ex.down.transport
        local = transport.get_extra_info("sockname") if transport is not None else None
        return local is not None and self.low <= local[1] <= self.high


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A peer that completed mTLS; with `name`, one whose SPIFFE ID matches it."""

    name: HeaderMatch | None

    def matches(self, ex) -> bool:
        peer = ex.down.peer_identity
        if peer is None:
            return False
        return self.name is None or _text_matches(self.name, peer.encode())


@dataclass(frozen=True, slots=True)
class RemoteIp:
    networks: tuple  # ipaddress networks

    def matches(self, ex) -> bool:
        raw = ex.down.peer_ip()
        if raw is None:
            return False
        try:
            address = ipaddress.ip_address(raw.decode())
        except ValueError:
            return False
        for net in self.networks:
            if address.version == net.version and address in net:
                return True
        return False


# -- compiled config ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    permissions: object  # a matcher
    principals: object

    def matches(self, ex) -> bool:
        return self.permissions.matches(ex) and self.principals.matches(ex)


@dataclass(frozen=True, slots=True)
class Rules:
    action: Action
    policies: tuple[Policy, ...]  # by name, as Envoy orders its policy map

    def matched(self, ex) -> str | None:
        """The name of the first policy that matches, or None."""
        for policy in self.policies:
            if policy.matches(ex):
                return policy.name
        return None


@dataclass(frozen=True, slots=True)
class RbacConfig:
    rules: Rules | None = None  # None: nothing is enforced
    shadow: Rules | None = None


def _string(sm, path: str) -> HeaderMatch:
    return string_match(sm, b"", False, path)


def _network(cidr, path: str):
    try:
        return ipaddress.ip_network(f"{cidr.address_prefix}/{cidr.prefix_len.value}"
                                    if cidr.HasField("prefix_len") else cidr.address_prefix,
                                    strict=False)
    except ValueError as exc:
        raise ConfigError(path, f"not a CIDR range: {exc}") from None


def _combine(kind, items: tuple):
    return items[0] if len(items) == 1 else kind(items)


def compile_permission(p: config_pb2.Permission, path: str, depth: int = 0):
    if depth > MAX_DEPTH:
        raise ConfigError(path, f"nested deeper than {MAX_DEPTH} levels")
    which = p.WhichOneof("rule")
    if which == "any":
        return Always()
    if which in ("and_rules", "or_rules"):
        rules = getattr(p, which).rules
        if not rules:
            raise ConfigError(f"{path}.{which}.rules", "at least one rule is required")
        items = tuple(compile_permission(r, f"{path}.{which}.rules[{i}]", depth + 1)
                      for i, r in enumerate(rules))
        return _combine(AllOf if which == "and_rules" else AnyOf, items)
    if which == "not_rule":
        return Not(compile_permission(p.not_rule, f"{path}.not_rule", depth + 1))
    if which == "header":
        return Header(header_match(p.header, f"{path}.header"))
    if which == "url_path":
        if p.url_path.WhichOneof("rule") != "path":
            raise ConfigError(f"{path}.url_path", "needs path")
        return UrlPath(_string(p.url_path.path, f"{path}.url_path.path"))
    if which == "destination_port":
        return DestinationPort(p.destination_port, p.destination_port)
    if which == "destination_port_range":
        r = p.destination_port_range
        if r.start >= r.end:
            raise ConfigError(f"{path}.destination_port_range", "needs start < end")
        return DestinationPort(r.start, r.end - 1)  # Envoy's Int32Range is half-open
    raise ConfigError(path, f"unsupported permission {which!r}")


def compile_principal(p: config_pb2.Principal, path: str, depth: int = 0):
    if depth > MAX_DEPTH:
        raise ConfigError(path, f"nested deeper than {MAX_DEPTH} levels")
    which = p.WhichOneof("identifier")
    if which == "any":
        return Always()
    if which in ("and_ids", "or_ids"):
        ids = getattr(p, which).ids
        if not ids:
            raise ConfigError(f"{path}.{which}.ids", "at least one principal is required")
        items = tuple(compile_principal(q, f"{path}.{which}.ids[{i}]", depth + 1)
                      for i, q in enumerate(ids))
        return _combine(AllOf if which == "and_ids" else AnyOf, items)
    if which == "not_id":
        return Not(compile_principal(p.not_id, f"{path}.not_id", depth + 1))
    if which == "authenticated":
        a = p.authenticated
        return Authenticated(_string(a.principal_name, f"{path}.authenticated.principal_name")
                             if a.HasField("principal_name") else None)
    if which in ("direct_remote_ip", "remote_ip", "source_ip"):
        # No proxy protocol or X-Forwarded-For is trusted here: all three are the peer.
        return RemoteIp((_network(getattr(p, which), f"{path}.{which}"),))
    if which == "header":
        return Header(header_match(p.header, f"{path}.header"))
    if which == "url_path":
        return UrlPath(_string(p.url_path.path, f"{path}.url_path.path"))
    raise ConfigError(path, f"unsupported principal {which!r}")


def compile_rules(rules: config_pb2.RBAC, path: str) -> Rules:
    if rules.action not in (0, 1, 2):
        raise ConfigError(f"{path}.action", "must be ALLOW, DENY or LOG")
    policies = []
    for name in sorted(rules.policies):
        pol = rules.policies[name]
        ppath = f"{path}.policies[{name}]"
        if pol.HasField("condition") or pol.HasField("checked_condition"):
            raise ConfigError(f"{ppath}.condition", "CEL conditions are not supported")
        if not pol.permissions:
            raise ConfigError(f"{ppath}.permissions", "at least one permission is required")
        if not pol.principals:
            raise ConfigError(f"{ppath}.principals", "at least one principal is required")
        perms = tuple(compile_permission(p, f"{ppath}.permissions[{i}]")
                      for i, p in enumerate(pol.permissions))
        who = tuple(compile_principal(p, f"{ppath}.principals[{i}]")
                    for i, p in enumerate(pol.principals))
        policies.append(Policy(name, _combine(AnyOf, perms), _combine(AnyOf, who)))
    return Rules(Action(rules.action), tuple(policies))


def compile_config(msg: RBAC, path: str) -> RbacConfig:
    if msg.HasField("matcher") or msg.HasField("shadow_matcher"):
        raise ConfigError(f"{path}.matcher", "the matcher API is not supported; use rules")
    return RbacConfig(
        rules=compile_rules(msg.rules, f"{path}.rules") if msg.HasField("rules") else None,
        shadow=(compile_rules(msg.shadow_rules, f"{path}.shadow_rules")
                if msg.HasField("shadow_rules") else None))


# -- the filter --------------------------------------------------------------------------

class RbacFilter:
    __slots__ = ("config",)

    def __init__(self, config: RbacConfig | None) -> None:
        self.config = config or RbacConfig()

    def on_request(self, ex) -> bool:
        cfg = self.config
        if cfg.shadow is not None:
            self._shadow(ex, cfg.shadow)
        rules = cfg.rules
        if rules is None:
            return True
        matched = rules.matched(ex)
        action = rules.action
        if action is Action.ALLOW:
            allowed = matched is not None
        elif action is Action.DENY:
            allowed = matched is None
        else:
            if matched is not None:
                ex.mgr.stats.count("rbac_logged_total")
                _note(ex, matched)
            return True
        if allowed:
            ex.mgr.stats.count("rbac_allowed_total")
            return True
        self._deny(ex, matched or "no matching ALLOW policy")
        return False

    def _shadow(self, ex, rules: Rules) -> None:
        matched = rules.matched(ex)
        allowed = (matched is not None) if rules.action is Action.ALLOW else (
            matched is None or rules.action is Action.LOG)
        ex.mgr.stats.count("rbac_shadow_allowed_total" if allowed else "rbac_shadow_denied_total")

    def _deny(self, ex, why: str) -> None:
        mgr = ex.mgr
        mgr.stats.count("rbac_denied_total")
        _note(ex, why)
        events = getattr(mgr, "events", None)
        if events is not None:
            events.count("denied", rule=why, service="", now=time.monotonic())
        ex.local_reply(Reason.DENIED)


def _note(ex, policy: str) -> None:
    """Name the policy that decided, for the access log."""
    state = ex.filter_state
    if state.__class__ is not dict:  # none yet, or a circuit breaker's admission alone
        state = ex.filter_state = {} if state is None else {circuit_breaker.NAME: state}
    state[NAME] = policy
