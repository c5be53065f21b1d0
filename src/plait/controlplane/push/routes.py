"""Virtual hosts and routes, from VirtualServices.

One virtual host per service a proxy calls. Each `http` entry of the host's
VirtualServices becomes one Envoy route per `match` (Istio ORs the matches of an entry;
Envoy tries routes in order, so the expansion keeps Istio's first-match semantics), all
sharing one action. Without a VirtualService the host gets one catch-all route to the
whole service, with Istio's default retry policy, as an Istio user would expect.

Conditions about the caller are decided here, per proxy, as Istio decides them when it
builds a proxy's config: a match with `sourceLabels` is kept only for callers whose
labels (with `app`) include them, one with `sourceNamespace` only for callers of that
namespace, one with `gateways` only if the list names `mesh`. `match.port` is the port
the caller addressed: for a proxyless client it is known (its target) and decided here;
for a sidecar it becomes a condition on `:authority` (`host:port`, or the bare host when
the port is the service's default).

Header operations: the entry's, then its destination's when it has exactly one; with
several destinations, each destination's go on its weighted cluster (Envoy's place for
them). Each builder also returns the clusters its routes reach as (host, port, subset),
so the caller serves exactly the clusters that are reachable. Faults: see `faults`;
circuit breakers: see `governance`. `corsPolicy` is not translated.
"""

from __future__ import annotations

import base64

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.v3 import percent_pb2

from plait.controlplane.push import governance
from plait.controlplane.push.clusters import consistent_hash, duration
from plait.controlplane.push.faults import set_route_fault
from plait.controlplane.push.index import MeshIndex, attr, for_mesh, seconds
from plait.controlplane.push.matches import fill_match, port_matcher, regex
from plait.controlplane.push.naming import outbound_cluster

ClusterRef = tuple[str, int, str]  # (host, port, subset)

# Istio's default when a route says nothing about retries (pilot's retry.DefaultPolicy).
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_ATTEMPTS = 2
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
_REDIRECT_CODES = {301: rc.RedirectAction.MOVED_PERMANENTLY, 302: rc.RedirectAction.FOUND,
                   303: rc.RedirectAction.SEE_OTHER, 307: rc.RedirectAction.TEMPORARY_REDIRECT,
                   308: rc.RedirectAction.PERMANENT_REDIRECT}
_SET = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_ADD = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def virtual_host(index: MeshIndex, host: str, *, domains: list[str], proxyless: bool,
                 port: int | None = None, labels: dict[str, str] | None = None,
                 namespace: str = "default") -> tuple[rc.VirtualHost, set[ClusterRef]]:
    """Routes for calls to `host`. `port`, when given, is the port the caller named and
    replaces the service's default port for destinations on the same host; `labels` and
    `namespace` are the calling workload's, for `sourceLabels` and `sourceNamespace`."""
    vhost = rc.VirtualHost(name=host, domains=domains)
    refs: set[ClusterRef] = set()
    # Proxyless clients have no breaker filter (gRPC would refuse a config it lacks).
    breakers = None if proxyless else governance.breakers(index, host)
    http_routes = index.routes_for(host)
    if not http_routes:
        ref = (host, port or _default_port(index, host), "")
        route = vhost.routes.add(name="default")
        route.match.prefix = "/"
        route.route.cluster = outbound_cluster(*ref)
        _set_retries(route.route, None)
        _add_hash_policy(route.route, index, [ref])
        _retry_other_hosts(route.route, None)
        _guard(route, breakers)
        refs.add(ref)
        return vhost, refs
    caller = _Caller(labels or {}, namespace, port or _default_port(index, host), proxyless)
    for number, http in enumerate(http_routes):
        matches = [m for m in http.match if caller.may_match(m)]
        if http.match and not matches:
            continue  # every match is for other callers
        template = rc.Route(name=http.name or f"{host}-{number}")
        refs |= _fill_action(template, index, http, proxyless=proxyless, ports={host: port})
        set_route_fault(template, http.fault)
        if template.HasField("route"):
            _guard(template, breakers)
        for match in matches or [None]:
            route = vhost.routes.add()
            route.CopyFrom(template)
            fill_match(route.match, match)
            if match is not None and match.port is not None and not proxyless:
                route.match.headers.append(
                    port_matcher(host, match.port, default=caller.port == match.port))
    return vhost, refs


class _Caller:
    """What a route's matches may ask about the caller, for one proxy."""

    __slots__ = ("labels", "namespace", "port", "proxyless")

    def __init__(self, labels: dict[str, str], namespace: str, port: int,
                 proxyless: bool) -> None:
        self.labels = labels
        self.namespace = namespace
        self.port = port  # the port a request without one goes to
        self.proxyless = proxyless

    def may_match(self, match) -> bool:
        """False when the match can never apply to this caller (decided here)."""
        if not match.source_labels.items() <= self.labels.items():
            return False
        if match.source_namespace is not None and match.source_namespace != self.namespace:
            return False
        if not for_mesh(match.gateways):
            return False
        # A proxyless client's port is known: the one it named, else the default.
        return not (self.proxyless and match.port is not None and match.port != self.port)


def _guard(route: rc.Route, breakers) -> None:
    if breakers is not None:
        route.typed_per_filter_config[governance.BREAKER_FILTER].Pack(breakers)


def domains_for(index: MeshIndex, host: str, *extra: str) -> list[str]:
    service = index.service(host)
    names = [*extra, host]
    for port in service.ports if service else ():
        names.append(f"{host}:{port}")
    return list(dict.fromkeys(names))


def _fill_action(route: rc.Route, index: MeshIndex, http, *, proxyless: bool,
                 ports: dict[str, int | None]) -> set[ClusterRef]:
    if http.direct_response is not None:
        _direct_response(route.direct_response, http.direct_response)
        return set()
    if http.redirect is not None:
        _redirect(route.redirect, http.redirect)
        return set()
    action = route.route
    refs = [(_ref(index, d.destination, ports), d.weight) for d in http.route]
    weighted = [(ref, w) for ref, w in refs if w]  # a 0 weight takes no traffic: leave it out
    if len(refs) == 1:
        weighted = [(refs[0][0], 100)]
    elif not weighted:  # several destinations, no weights: an even split (the model's rule)
        weighted = [(ref, 1) for ref, _ in refs]
    headers = {ref: d.headers for ref, d in zip((r for r, _ in refs), http.route)}
    _header_operations(route, http.headers)
    if len(weighted) == 1:
        action.cluster = outbound_cluster(*weighted[0][0])
        _header_operations(route, headers.get(weighted[0][0]))
    else:
        for ref, weight in weighted:
            entry = action.weighted_clusters.clusters.add(name=outbound_cluster(*ref))
            entry.weight.value = weight
            _header_operations(entry, headers.get(ref))
    used = {ref for ref, _ in weighted}
    timeout = seconds(http.timeout)
    if timeout is not None:
        action.timeout.CopyFrom(duration(timeout))
        if proxyless:
            # gRPC ignores `timeout`; it bounds a call by max_stream_duration (gRFC A31).
            action.max_stream_duration.max_stream_duration.CopyFrom(duration(timeout))
    _set_retries(action, http.retries)
    if http.rewrite is not None:
        if http.rewrite.uri is not None:
            action.prefix_rewrite = http.rewrite.uri
        elif http.rewrite.uri_regex_rewrite is not None:
            action.regex_rewrite.pattern.CopyFrom(regex(http.rewrite.uri_regex_rewrite.match))
            action.regex_rewrite.substitution = http.rewrite.uri_regex_rewrite.rewrite
        if http.rewrite.authority is not None:
            action.host_rewrite_literal = http.rewrite.authority
    if http.mirror is not None:
        mirror_ref = _ref(index, http.mirror, ports)
        used.add(mirror_ref)
        mirror = action.request_mirror_policies.add(cluster=outbound_cluster(*mirror_ref))
        share = http.mirror_percentage.value if http.mirror_percentage is not None else 100.0
        mirror.runtime_fraction.default_value.numerator = round(share * 10_000)
        mirror.runtime_fraction.default_value.denominator = percent_pb2.FractionalPercent.MILLION
    _add_hash_policy(action, index, sorted(used))
    _retry_other_hosts(action, http.retries)
    return used


def _ref(index: MeshIndex, destination, ports: dict[str, int | None]) -> ClusterRef:
    host = destination.host
    port = attr(destination, "port", "number") or ports.get(host) or _default_port(index, host)
    return host, port, destination.subset or ""


def _default_port(index: MeshIndex, host: str) -> int:
    service = index.service(host)
    return service.port if service else 0


def _set_retries(action: rc.RouteAction, retries) -> None:
    if retries is None:
        attempts, retry_on = DEFAULT_ATTEMPTS, DEFAULT_RETRY_ON
    else:
        attempts, retry_on = retries.attempts, retries.retry_on or DEFAULT_RETRY_ON
    if not attempts:  # written as 0 (or left out of a retries block): no retries
        return
    policy = action.retry_policy
    policy.num_retries.value = attempts
    # Istio passes plain status codes inside retryOn; Envoy wants them apart.
    conditions = [c.strip() for c in retry_on.split(",") if c.strip()]
    codes = [int(c) for c in conditions if c.isdigit()]
    named = [c for c in conditions if not c.isdigit()]
    if codes or "retriable-status-codes" in named:
        policy.retriable_status_codes.extend(codes or [503])
        if "retriable-status-codes" not in named:
            named.append("retriable-status-codes")
    policy.retry_on = ",".join(named)
    per_try = seconds(attr(retries, "per_try_timeout"))
    if per_try:
        policy.per_try_timeout.CopyFrom(duration(per_try))


def _retry_other_hosts(action: rc.RouteAction, retries) -> None:
    """Istio's default: a retry goes to a host this request has not tried (Envoy's
    previous_hosts predicate, up to five picks more), unless the route hashes its requests
    to hosts (consistent hashing) or the rule says `retryIgnorePreviousHosts: false`."""
    if not action.HasField("retry_policy") or action.hash_policy:
        return
    if retries is not None and retries.retry_ignore_previous_hosts is False:
        return
    predicate = action.retry_policy.retry_host_predicate.add(name=PREVIOUS_HOSTS)
    predicate.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    action.retry_policy.host_selection_retry_max_attempts = 5


def _add_hash_policy(action: rc.RouteAction, index: MeshIndex, refs) -> None:
    for host, port, subset in refs:
        settings = consistent_hash(index, host, subset, port)
        if settings is None:
            continue
        policy = action.hash_policy.add()
        if settings.http_header_name:
            policy.header.header_name = settings.http_header_name
        elif settings.http_cookie is not None:
            policy.cookie.name = settings.http_cookie.name
            if settings.http_cookie.path:
                policy.cookie.path = settings.http_cookie.path
            if settings.http_cookie.ttl:
                policy.cookie.ttl.CopyFrom(duration(seconds(settings.http_cookie.ttl)))
        elif settings.http_query_parameter_name:
            policy.query_parameter.name = settings.http_query_parameter_name
        else:
            policy.connection_properties.source_ip = True
        return  # one key per route: the first destination with a ring hash decides


def _direct_response(out: rc.DirectResponseAction, istio) -> None:
    out.status = istio.status
    if istio.body is not None:
        if istio.body.string is not None:
            out.body.inline_string = istio.body.string
        else:
            out.body.inline_bytes = base64.b64decode(istio.body.bytes)


def _redirect(out: rc.RedirectAction, istio) -> None:
    if istio.uri is not None:
        out.path_redirect = istio.uri
    if istio.authority is not None:
        out.host_redirect = istio.authority
    if istio.port is not None:
        out.port_redirect = istio.port
    if istio.scheme is not None:
        out.scheme_redirect = istio.scheme
    out.response_code = _REDIRECT_CODES.get(istio.redirect_code or 301,
                                            rc.RedirectAction.MOVED_PERMANENTLY)


def _header_operations(target, headers) -> None:
    """Add Istio `headers` operations to a Route or a weighted cluster entry."""
    for ops, to_add, to_remove in (
        (attr(headers, "request"), target.request_headers_to_add,
         target.request_headers_to_remove),
        (attr(headers, "response"), target.response_headers_to_add,
         target.response_headers_to_remove),
    ):
        if ops is None:
            continue
        for action, values in ((_SET, ops.set), (_ADD, ops.add)):
            for name in sorted(values):
                option = to_add.add(append_action=action)
                option.header.key, option.header.value = name, values[name]
        to_remove.extend(ops.remove)
