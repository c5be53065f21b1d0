"""Compile xDS resources into the sidecar's plain config (`plait.dataplane.config`).

This is the one road from protobuf to the data plane: a static bootstrap file and a
control plane's push both come through `compile_snapshot`. Everything is checked here,
once, and rejected with a field path; the request path then trusts what it is given.
"""

from __future__ import annotations

import re
from typing import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from plait.codec.http1 import HOP_BY_HOP
from plait.core.errors import ConfigError
from plait.dataplane import filters
from plait.dataplane.matchers import header_match, query_match, regex
from plait.dataplane.net import tls_config
from plait.dataplane.upstream import outlier_config
from plait.dataplane.config import (
    ClusterConfig, Direction, Endpoint, HashPolicy, HeaderEdit, HeaderMatch, HealthCheck,
    LbPolicy, ListenerConfig, Mirror, PathMatchKind, PoolLimits, Redirect,
    RetryBudget, RetryPolicy,
    Route, RouteTable, Snapshot, VirtualHost, WeightedCluster,
)
from plait.xds.resources import duration

HCM_NAME = "envoy.filters.network.http_connection_manager"
CONNECTION_LIMIT_NAME = "envoy.filters.network.connection_limit"

_LB = {
    cluster_pb2.Cluster.ROUND_ROBIN: LbPolicy.ROUND_ROBIN,
    cluster_pb2.Cluster.LEAST_REQUEST: LbPolicy.LEAST_REQUEST,
    cluster_pb2.Cluster.RANDOM: LbPolicy.RANDOM,
    cluster_pb2.Cluster.RING_HASH: LbPolicy.RING_HASH,
}
_PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"  # the one retry predicate
# Envoy's retry_on vocabulary. The gRPC-status conditions are accepted (a control plane
# sends them for gRPC routes) and take effect only where a grpc-status is seen.
_RETRY_ON = frozenset(("5xx", "gateway-error", "reset", "connect-failure",
                       "retriable-status-codes", "refused-stream", "retriable-4xx",
                       "envoy-ratelimited", "cancelled", "deadline-exceeded", "internal",
                       "resource-exhausted", "unavailable"))


def compile_snapshot(*, version: str,
                     listeners: Iterable[listener_pb2.Listener],
                     clusters: Iterable[cluster_pb2.Cluster],
                     routes: Iterable[route_pb2.RouteConfiguration] = (),
                     endpoints: Iterable[endpoint_pb2.ClusterLoadAssignment] = (),
                     node_id: str = "", admin: tuple[str, int] = ("127.0.0.1", 15000),
                     root: str = "", raw: dict | None = None) -> Snapshot:
    """Turn a consistent set of xDS resources into a Snapshot. Raises ConfigError.

    Listeners that name a route configuration by RDS get it from `routes`; EDS clusters get
    their endpoints from `endpoints`. `root` prefixes error paths ("static_resources").
    As in Envoy (`validate_clusters`), an inline route table naming an unknown cluster is
    an error, while one that came by RDS is not: such a route answers 503 no_cluster.
    """
    pre = f"{root}." if root else ""
    tables = {}
    for i, rc in enumerate(routes):
        tables[rc.name] = compile_route_table(rc, path=f"routes[{i}]")
    assignments = {cla.cluster_name: cla for cla in endpoints}
    compiled_clusters: dict[str, ClusterConfig] = {}
    for i, c in enumerate(clusters):
        path = f"{pre}clusters[{i}]"
        if c.name in compiled_clusters:
            raise ConfigError(f"{path}.name", f"duplicate cluster name {c.name!r}")
        compiled_clusters[c.name] = compile_cluster(c, assignments, path=path)
    compiled_listeners = []
    seen = set()
    for i, lis in enumerate(listeners):
        path = f"{pre}listeners[{i}]"
        if lis.name in seen:
            raise ConfigError(f"{path}.name", f"duplicate listener name {lis.name!r}")
        seen.add(lis.name)
        compiled = compile_listener(lis, tables, path=path)
        if not compiled.rds_name:
            _check_clusters(compiled.route_table, compiled_clusters, path)
        compiled_listeners.append(compiled)
    return Snapshot(version=version, listeners=tuple(compiled_listeners),
                    clusters=compiled_clusters, node_id=node_id, admin_host=admin[0],
                    admin_port=admin[1], raw=raw or {})


def _check_clusters(table: RouteTable | None, clusters: dict, path: str) -> None:
    if table is None:
        return
    for vh in table.virtual_hosts:
        for route in vh.routes:
            names = [route.cluster] if route.cluster else [w.name for w in route.weighted_clusters]
            names += [m.cluster for m in route.mirrors]
            for name in names:
                if name not in clusters:
                    raise ConfigError(f"{path}.route_config", f"route {route.name!r} in "
                                      f"virtual host {vh.name!r} names unknown cluster {name!r}")


def compile_listener(lis: listener_pb2.Listener, tables: dict | None, *,
                     path: str) -> ListenerConfig:
    """Compile one listener. With `tables` None, an RDS reference is left unresolved
    (validating a listener on its own, before its routes arrive)."""
    if not lis.name:
        raise ConfigError(f"{path}.name", "required")
    sa = lis.address.socket_address
    if not lis.HasField("address") or not sa.address:
        raise ConfigError(f"{path}.address.socket_address.address", "required")
    index, filter_chain, transport = tls_config.listener_chain(lis, path)
    limit = 0
    hcm = None
    for j, f in enumerate(filter_chain.filters):
        fpath = f"{path}.filter_chains[{index}].filters[{j}]"
        if f.name == CONNECTION_LIMIT_NAME:
            cl = connection_limit_pb2.ConnectionLimit()
            f.typed_config.Unpack(cl)
            limit = cl.max_connections.value
        elif f.name == HCM_NAME:
            hcm = hcm_pb2.HttpConnectionManager()
            if not f.typed_config.Unpack(hcm):
                raise ConfigError(f"{fpath}.typed_config", "not an HttpConnectionManager")
            hcm_path = f"{fpath}.typed_config"
        else:
            raise ConfigError(f"{fpath}.name", f"unsupported network filter {f.name!r}")
    if hcm is None:
        raise ConfigError(f"{path}.filter_chains[{index}].filters",
                          f"needs {HCM_NAME}")
    table = None
    rds_name = ""
    if hcm.HasField("route_config"):
        table = compile_route_table(hcm.route_config, path=f"{hcm_path}.route_config")
    elif hcm.HasField("rds"):
        rds_name = hcm.rds.route_config_name
        if not rds_name:
            raise ConfigError(f"{hcm_path}.rds.route_config_name", "required")
        table = tables.get(rds_name) if tables is not None else None
        if table is None and tables is not None:
            raise ConfigError(f"{hcm_path}.rds.route_config_name",
                              f"no route configuration named {rds_name!r}")
    else:
        raise ConfigError(f"{hcm_path}", "needs route_config or rds")
    chain = filters.compile_chain(hcm.http_filters, path=f"{hcm_path}.http_filters")
    direction = (Direction.INBOUND if lis.traffic_direction == base_pb2.INBOUND
                 else Direction.OUTBOUND)
    cfg = dict(name=lis.name, host=sa.address, port=sa.port_value, direction=direction,
               stat_prefix=hcm.stat_prefix or lis.name, route_table=table, rds_name=rds_name,
               connection_limit=limit, http_filters=chain, transport=transport)
    if hcm.HasField("max_request_headers_kb"):
        cfg["max_request_headers_bytes"] = hcm.max_request_headers_kb.value * 1024
    if hcm.HasField("request_headers_timeout"):
        cfg["request_headers_timeout"] = duration(hcm.request_headers_timeout)
    if hcm.common_http_protocol_options.HasField("idle_timeout"):
        cfg["idle_timeout"] = duration(hcm.common_http_protocol_options.idle_timeout)
    return ListenerConfig(**cfg)


def compile_route_table(rc: route_pb2.RouteConfiguration, *, path: str) -> RouteTable:
    exact: dict[str, VirtualHost] = {}
    suffixes, prefixes = [], []
    default = None
    vhosts = []
    for i, vh in enumerate(rc.virtual_hosts):
        vpath = f"{path}.virtual_hosts[{i}]"
        if not vh.domains:
            raise ConfigError(f"{vpath}.domains", "at least one domain is required")
        routes = tuple(compile_route(r, path=f"{vpath}.routes[{j}]", vhost=vh)
                       for j, r in enumerate(vh.routes))
        compiled = VirtualHost(name=vh.name, domains=tuple(vh.domains), routes=routes)
        vhosts.append(compiled)
        for domain in vh.domains:
            domain = domain.lower()
            if domain in exact or any(d == domain for d, _ in suffixes + prefixes) or (
                    domain == "*" and default is not None):
                raise ConfigError(f"{vpath}.domains", f"domain {domain!r} appears twice")
            if domain == "*":
                default = compiled
            elif domain.startswith("*"):
                suffixes.append((domain[1:], compiled))
            elif domain.endswith("*"):
                prefixes.append((domain[:-1], compiled))
            else:
                exact[domain] = compiled
    suffixes.sort(key=lambda p: -len(p[0]))
    prefixes.sort(key=lambda p: -len(p[0]))
    return RouteTable(name=rc.name, exact=exact, suffixes=tuple(suffixes),
                      prefixes=tuple(prefixes), default=default, virtual_hosts=tuple(vhosts))


def compile_route(r: route_pb2.Route, *, path: str, vhost=None) -> Route:
    m = r.match
    spec = m.WhichOneof("path_specifier")
    if spec == "prefix":
        kind, value = PathMatchKind.PREFIX, m.prefix
    elif spec == "path":
        kind, value = PathMatchKind.EXACT, m.path
    elif spec == "safe_regex":
        kind, value = PathMatchKind.REGEX, m.safe_regex.regex
        regex(value.encode(), f"{path}.match.safe_regex.regex")
    else:
        raise ConfigError(f"{path}.match", "needs prefix, path or safe_regex")
    case_sensitive = m.case_sensitive.value if m.HasField("case_sensitive") else True
    headers = tuple(header_match(h, f"{path}.match.headers[{k}]")
                    for k, h in enumerate(m.headers))
    query = tuple(query_match(q, f"{path}.match.query_parameters[{k}]")
                  for k, q in enumerate(m.query_parameters))
    out = dict(name=r.name or path.rsplit(".", 1)[-1], path_kind=kind, path=value,
               headers=headers, query=query, case_sensitive=case_sensitive)
    out["request_headers"] = _header_edit(r, vhost, path, "request")
    out["response_headers"] = _header_edit(r, vhost, path, "response")
    out["per_filter"] = filters.compile_per_route(r.typed_per_filter_config,
                                                  path=f"{path}.typed_per_filter_config")
    action = r.WhichOneof("action")
    if action == "direct_response":
        out["direct_status"] = r.direct_response.status
        body = r.direct_response.body
        out["direct_body"] = (body.inline_bytes if body.WhichOneof("specifier") == "inline_bytes"
                              else body.inline_string.encode())
        if not 200 <= r.direct_response.status <= 599:
            raise ConfigError(f"{path}.direct_response.status", "must be 200..599")
        return Route(**out)
    if action == "redirect":
        out["redirect"] = _redirect(r.redirect, f"{path}.redirect")
        return Route(**out)
    if action != "route":
        raise ConfigError(f"{path}", f"unsupported route action {action!r}")
    ra = r.route
    target = ra.WhichOneof("cluster_specifier")
    if target == "cluster":
        out["cluster"] = ra.cluster
    elif target == "weighted_clusters":
        wcs = tuple(WeightedCluster(name=w.name, weight=w.weight.value)
                    for w in ra.weighted_clusters.clusters)
        if not wcs or sum(w.weight for w in wcs) <= 0:
            raise ConfigError(f"{path}.route.weighted_clusters", "weights must sum above 0")
        out["weighted_clusters"] = wcs
    else:
        raise ConfigError(f"{path}.route", "needs cluster or weighted_clusters")
    if ra.HasField("timeout"):
        out["timeout"] = duration(ra.timeout)
    if ra.HasField("retry_policy"):
        out["retry"] = _retry_policy(ra.retry_policy, f"{path}.route.retry_policy")
    if ra.prefix_rewrite:
        out["prefix_rewrite"] = ra.prefix_rewrite
    if ra.HasField("regex_rewrite"):
        rr = ra.regex_rewrite
        pattern = regex(rr.pattern.regex.encode(), f"{path}.route.regex_rewrite.pattern.regex",
                        captures=True)
        out["regex_rewrite"] = (pattern, _rewrite_template(
            rr.substitution, pattern.groups, f"{path}.route.regex_rewrite.substitution"))
    if ra.host_rewrite_literal:
        out["host_rewrite"] = ra.host_rewrite_literal
    policies = []
    for k, hp in enumerate(ra.hash_policy):
        which = hp.WhichOneof("policy_specifier")
        if which == "header":
            policies.append(HashPolicy("header", hp.header.header_name.lower().encode()))
        elif which == "cookie":
            policies.append(HashPolicy("cookie", hp.cookie.name.encode()))
        elif which == "query_parameter":
            if not hp.query_parameter.name:
                raise ConfigError(f"{path}.route.hash_policy[{k}].query_parameter.name",
                                  "must not be empty")
            policies.append(HashPolicy("query_parameter", hp.query_parameter.name.encode()))
        elif which == "connection_properties" and hp.connection_properties.source_ip:
            policies.append(HashPolicy("source_ip"))
        else:
            raise ConfigError(f"{path}.route.hash_policy[{k}]", f"unsupported policy {which!r}")
    out["hash_policies"] = tuple(policies)
    mirrors = []
    for k, mp in enumerate(ra.request_mirror_policies):
        fraction = 1.0
        if mp.HasField("runtime_fraction"):
            fraction = _fraction(mp.runtime_fraction.default_value)
        if not mp.cluster:
            raise ConfigError(f"{path}.route.request_mirror_policies[{k}].cluster", "required")
        mirrors.append(Mirror(cluster=mp.cluster, fraction=fraction))
    out["mirrors"] = tuple(mirrors)
    return Route(**out)


def _rewrite_template(substitution: str, groups: int, path: str) -> bytes:
    """An RE2 rewrite string (`\\0` the whole match, `\\1`..`\\9` groups, `\\\\` a
    backslash; any other backslash is an error) as a template for `Regex.sub`, checked
    here so that no request can meet a bad group reference."""
    out = []
    i = 0
    while i < len(substitution):
        ch = substitution[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = substitution[i + 1:i + 2]
        if nxt and nxt in "0123456789":
            if int(nxt) > groups:
                raise ConfigError(path, f"\\{nxt} names a group the pattern lacks "
                                  f"(it has {groups})")
            out.append(f"\\g<{nxt}>")
        elif nxt == "\\":
            out.append("\\\\")
        else:
            raise ConfigError(path, "a backslash must be followed by a digit or a backslash")
        i += 2
    return "".join(out).encode()


_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}  # envoy.type.v3.FractionalPercent


def _fraction(fp) -> float:
    """An Envoy FractionalPercent as a number in 0..1."""
    return min(1.0, fp.numerator / _DENOMINATORS.get(fp.denominator, 100))


_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}


def _redirect(rd, path: str) -> Redirect:
    scheme = b"https" if rd.https_redirect else (rd.scheme_redirect.encode() or None)
    which = rd.WhichOneof("path_rewrite_specifier")
    if rd.HasField("regex_rewrite"):
        raise ConfigError(f"{path}.regex_rewrite", "not supported in redirects")
    return Redirect(status=_REDIRECT_CODES.get(rd.response_code, 301), scheme=scheme,
                    host=rd.host_redirect.encode() or None, port=rd.port_redirect,
                    path=rd.path_redirect.encode() if which == "path_redirect" else None,
                    prefix_rewrite=rd.prefix_rewrite.encode() if which == "prefix_rewrite" else None,
                    strip_query=rd.strip_query)


# Headers that frame a message or describe one hop: the codec derives them for each hop,
# and an edit to them would desynchronise the message from its framing.
_FRAMING = HOP_BY_HOP | {b"content-length"}
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header_edit(r, vhost, path: str, kind: str) -> HeaderEdit | None:
    """The route's `{kind}_headers_to_add` and `_remove` ("request" or "response"), then
    its virtual host's, each entry checked under its own field path."""
    sources = [(path, r)]
    if vhost is not None:
        sources.append((path.rsplit(".routes[", 1)[0], vhost))
    adds = [(f"{p}.{kind}_headers_to_add[{k}]", opt) for p, m in sources
            for k, opt in enumerate(getattr(m, f"{kind}_headers_to_add"))]
    removes = [(f"{p}.{kind}_headers_to_remove[{k}]", name.lower()) for p, m in sources
               for k, name in enumerate(getattr(m, f"{kind}_headers_to_remove"))]
    if not adds and not removes:
        return None
    for fpath, name in removes:
        if not name or name.startswith(":") or name == "host":
            raise ConfigError(fpath, f"cannot remove {name!r}")  # as Envoy refuses
        if name.encode() in _FRAMING:
            raise ConfigError(fpath, f"{name!r} frames the message; the sidecar sets it")
    out = []
    for fpath, opt in adds:
        name = opt.header.key.lower()
        if not name or name.startswith(":") or name == "host":
            raise ConfigError(f"{fpath}.header.key", f"cannot set {name!r}")
        if name.encode() in _FRAMING:
            raise ConfigError(f"{fpath}.header.key",
                              f"{name!r} frames the message; the sidecar sets it")
        if opt.HasField("append"):
            append = opt.append.value
        elif opt.append_action in (_APPEND, _OVERWRITE):
            append = opt.append_action == _APPEND
        else:
            raise ConfigError(f"{fpath}.append_action", "only APPEND_IF_EXISTS_OR_ADD and "
                              "OVERWRITE_IF_EXISTS_OR_ADD are supported")
        if not append:  # Envoy applies entries in order: an overwrite drops earlier adds
            out = [e for e in out if e[0] != name.encode()]
        out.append((name.encode(), opt.header.value.encode(), append))
    return HeaderEdit(add=tuple(out), remove=frozenset(n.encode() for _, n in removes))


def _retry_policy(rp: route_pb2.RetryPolicy, path: str) -> RetryPolicy:
    conditions = frozenset(c.strip() for c in rp.retry_on.split(",") if c.strip())
    unknown = conditions - _RETRY_ON
    if unknown:
        raise ConfigError(f"{path}.retry_on", f"unsupported condition(s) {sorted(unknown)}")
    out = dict(retry_on=conditions)
    out["num_retries"] = rp.num_retries.value if rp.HasField("num_retries") else 1
    if rp.HasField("per_try_timeout"):
        out["per_try_timeout"] = duration(rp.per_try_timeout)
    if rp.HasField("retry_back_off"):
        base = duration(rp.retry_back_off.base_interval)
        if base <= 0:
            raise ConfigError(f"{path}.retry_back_off.base_interval", "must be above 0")
        out["base_interval"] = base
        out["max_interval"] = (duration(rp.retry_back_off.max_interval)
                               if rp.retry_back_off.HasField("max_interval") else 10 * base)
    if rp.retriable_status_codes:
        out["retriable_status_codes"] = frozenset(rp.retriable_status_codes)
    for k, predicate in enumerate(rp.retry_host_predicate):
        if predicate.name != _PREVIOUS_HOSTS and not predicate.typed_config.type_url.endswith(
                "/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"):
            raise ConfigError(f"{path}.retry_host_predicate[{k}]",
                              f"unsupported predicate {predicate.name!r} (only {_PREVIOUS_HOSTS})")
        out["previous_hosts"] = True
    if rp.host_selection_retry_max_attempts:  # re-picks per retry: bounded, a config's ask
        out["host_selection_attempts"] = min(rp.host_selection_retry_max_attempts, 100)
    return RetryPolicy(**out)


def compile_cluster(c: cluster_pb2.Cluster, assignments: dict, *, path: str) -> ClusterConfig:
    if not c.name:
        raise ConfigError(f"{path}.name", "required")
    if c.lb_policy not in _LB:
        raise ConfigError(f"{path}.lb_policy", "unsupported load balancing policy")
    tls = tls_config.cluster_tls(c, path)
    out = dict(name=c.name, lb_policy=_LB[c.lb_policy])
    if c.HasField("connect_timeout"):
        out["connect_timeout"] = duration(c.connect_timeout)
    cho = c.common_http_protocol_options
    if cho.HasField("idle_timeout"):
        out["idle_timeout"] = duration(cho.idle_timeout)
    if cho.HasField("max_requests_per_connection"):
        out["max_requests_per_connection"] = cho.max_requests_per_connection.value
    elif c.HasField("max_requests_per_connection"):
        out["max_requests_per_connection"] = c.max_requests_per_connection.value
    if c.ring_hash_lb_config.HasField("minimum_ring_size"):
        out["ring_size"] = min(c.ring_hash_lb_config.minimum_ring_size.value, 1 << 20)
    if c.common_lb_config.HasField("healthy_panic_threshold"):
        out["healthy_panic_threshold"] = c.common_lb_config.healthy_panic_threshold.value
    for t in c.circuit_breakers.thresholds:
        if t.priority == base_pb2.DEFAULT:
            out["limits"] = _pool_limits(t)
        if t.HasField("retry_budget"):
            rb = t.retry_budget
            # Envoy's budget is a share of active requests; Plait's is a share of the
            # request rate over a window (Linkerd's), so budget_percent is read as that
            # share and min_retry_concurrency as the floor in retries per second.
            default = RetryBudget()
            out["retry_budget"] = RetryBudget(
                ratio=(rb.budget_percent.value / 100.0 if rb.HasField("budget_percent")
                       else default.ratio),
                min_per_second=(float(rb.min_retry_concurrency.value)
                                if rb.HasField("min_retry_concurrency")
                                else default.min_per_second))
    out["outlier"] = outlier_config.compile_outlier(c, path)
    if len(c.health_checks) > 1:
        raise ConfigError(f"{path}.health_checks", "at most one health check is supported")
    if c.health_checks:
        out["health_check"] = _health_check(c.health_checks[0], f"{path}.health_checks[0]")
    if c.type == cluster_pb2.Cluster.EDS:
        name = c.eds_cluster_config.service_name or c.name
        out["eds_service_name"] = name
        cla = assignments.get(name)
        out["endpoints"] = compile_endpoints(cla, f"endpoints[{name}]") if cla is not None else ()
    else:
        cla = c.load_assignment
        out["endpoints"] = compile_endpoints(cla, f"{path}.load_assignment")
    if tls is not None and cla is not None:
        out["endpoints"] = tls_config.resolve_endpoints(out["endpoints"], tls, cla)
    return ClusterConfig(**out)


def _pool_limits(t) -> PoolLimits:
    """One `circuit_breakers.thresholds` entry; unset fields keep Envoy's defaults. Only
    priority DEFAULT is used: Plait has no high-priority request class."""
    d = PoolLimits()
    return PoolLimits(**{name: getattr(t, name).value if t.HasField(name) else getattr(d, name)
                         for name in ("max_connections", "max_pending_requests",
                                      "max_requests", "max_retries")})


def _health_check(hc, path: str) -> HealthCheck:
    for name in ("interval", "timeout", "unhealthy_threshold", "healthy_threshold"):
        if not hc.HasField(name):
            raise ConfigError(f"{path}.{name}", "required")
    interval, timeout = duration(hc.interval), duration(hc.timeout)
    if interval <= 0:
        raise ConfigError(f"{path}.interval", "must be above 0")
    if timeout <= 0:
        raise ConfigError(f"{path}.timeout", "must be above 0")
    out = dict(interval=interval, timeout=timeout,
               unhealthy_threshold=max(1, hc.unhealthy_threshold.value),
               healthy_threshold=max(1, hc.healthy_threshold.value))
    which = hc.WhichOneof("health_checker")
    if which == "http_health_check":
        http = hc.http_health_check
        if not http.path.startswith("/"):
            raise ConfigError(f"{path}.http_health_check.path", "required, starting with /")
        out["http_path"] = http.path
        out["http_host"] = http.host
        if http.expected_statuses:
            ranges = []
            for k, r in enumerate(http.expected_statuses):
                if not 100 <= r.start < r.end <= 600:
                    raise ConfigError(f"{path}.http_health_check.expected_statuses[{k}]",
                                      "needs 100 <= start < end <= 600")
                ranges.append((r.start, r.end))
            out["expected"] = tuple(ranges)
    elif which == "tcp_health_check":
        tcp = hc.tcp_health_check
        if tcp.HasField("send") or tcp.receive:
            raise ConfigError(f"{path}.tcp_health_check", "only a plain connect check is "
                              "supported (no send or receive payloads)")
    else:
        raise ConfigError(f"{path}", f"unsupported health checker {which!r}; "
                          "use http_health_check or tcp_health_check")
    return HealthCheck(**out)


def compile_endpoints(cla: endpoint_pb2.ClusterLoadAssignment, path: str) -> tuple[Endpoint, ...]:
    out = []
    for i, locality in enumerate(cla.endpoints):
        for j, lb in enumerate(locality.lb_endpoints):
            sa = lb.endpoint.address.socket_address
            epath = f"{path}.endpoints[{i}].lb_endpoints[{j}].endpoint.address.socket_address"
            if not sa.address:
                raise ConfigError(f"{epath}.address", "required")
            if not 0 < sa.port_value < 65536:
                raise ConfigError(f"{epath}.port_value", "must be 1..65535")
            if lb.health_status in (health_check_pb2.UNHEALTHY, health_check_pb2.DRAINING):
                continue
            weight = lb.load_balancing_weight.value if lb.HasField("load_balancing_weight") else 1
            labels = ()
            meta = lb.metadata.filter_metadata.get("plait")
            if meta is not None:
                labels = tuple(sorted((k, str(v)) for k, v in meta.items()))
            out.append(Endpoint(host=sa.address, port=sa.port_value, weight=max(weight, 1),
                                zone=locality.locality.zone, labels=labels,
                                priority=locality.priority))
    return tuple(out)
