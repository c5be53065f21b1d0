"""PeerAuthentication and AuthorizationPolicy, translated for one proxy; auto mTLS.

Which workload a policy covers (Istio's rules): a resource in the mesh root namespace
(`istio-system`) without a selector covers the mesh; one elsewhere without a selector its
namespace; one with `selector.matchLabels` the workloads of its namespace whose labels
include them. A workload's labels are its app (`app: <service>`) plus the labels it was
started with; its namespace comes from its workload identity (node metadata `namespace`).

PeerAuthentication → the inbound listener. The mode is the mesh's, overridden by the
namespace's, then the workload's, then `portLevelMtls` for the app's port (UNSET
inherits; nothing at all means PERMISSIVE, as in Istio). Only a sidecar that holds a
certificate (node metadata `mtls`) can serve TLS, so a sidecar without one keeps a
plaintext listener whatever the mode. STRICT: one chain with a DownstreamTlsContext that
requires a client certificate. PERMISSIVE: Envoy's two chains (tls / raw_buffer) behind a
tls_inspector. The certificates are named by SDS as Istio names them (`default`,
`ROOTCA`) and mean the sidecar's own workload identity.

AuthorizationPolicy → RBAC filters at the head of the inbound listener's chain: one for
DENY policies, then one for ALLOW policies (only if some exist), then one (LOG) for AUDIT,
which is Istio's evaluation order. Each rule is one RBAC policy named like Istio's,
`ns[<ns>]-policy[<name>]-rule[<i>]`. Ports (`to.operation.ports`, `destination.port`)
name the app's port; a Plait inbound listener fronts exactly one, so those conditions are
decided here, when the filter is made.

Auto mTLS with secure naming: a caller that holds a certificate uses mTLS to an endpoint
whose instance was registered by an authenticated workload (the registry records its
SPIFFE ID on the instance) unless that workload's PeerAuthentication mode is DISABLE,
and accepts there only a server presenting that SPIFFE ID (URI SAN, exact), as Istio's
secure naming does. EDS marks such endpoints (`envoy.transport_socket_match: {tlsMode:
plait, identity: <SPIFFE ID>}`), and the caller's clusters carry one
`transport_socket_matches` entry per identity behind them, each with its
`match_typed_subject_alt_names`; every other endpoint gets plaintext, so one cluster may
mix both kinds during a migration. A last entry, for the bare `{tlsMode: plait}` mark,
takes endpoints whose own entry the caller does not have yet (EDS and CDS are separate
responses): it accepts only the cluster's identities, and so refuses them, rather than
falling back to plaintext; a cluster with no identity at all leaves it without a SAN.
Instances registered without authentication (`--insecure-dev`) still take mTLS by their
`security.plait.io/tls` label, as before secure naming: they carry the bare mark, and
that entry then names no SAN (any certificate of the mesh).
"""

from __future__ import annotations

import re
from typing import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from plait.controlplane.mesh import Instance
from plait.controlplane.push.index import MeshIndex, order_key, spec
from plait.security.labels import (IDENTITY_KEY, NAMESPACE_LABEL, TLS_LABEL, TLS_MODE_KEY,
                                   TLS_MODE_VALUE)
from plait.security.spiffe import SpiffeId

MESH_ROOT = "istio-system"
DEFAULT_MODE = "PERMISSIVE"
RBAC_FILTER = "envoy.filters.http.rbac"
TLS_SOCKET = "envoy.transport_sockets.tls"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
SOCKET_MATCH = "envoy.transport_socket_match"
_ACTIONS = {"DENY": rbac_pb2.RBAC.DENY, "ALLOW": rbac_pb2.RBAC.ALLOW, "AUDIT": rbac_pb2.RBAC.LOG}

Principal = rbac_pb2.Principal
Permission = rbac_pb2.Permission
StringMatcher = string_pb2.StringMatcher


# -- which resources cover a workload ---------------------------------------------------------

def workload_labels(app: str, labels) -> dict[str, str]:
    return {"app": app, **dict(labels)} if app else dict(labels)


def _selected(resource, namespace: str, labels: dict[str, str]) -> str | None:
    """"workload", "namespace" or "mesh" when `resource` covers the workload, else None."""
    ns = resource.metadata.namespace
    selector = spec(resource).selector
    wanted = selector.match_labels if selector is not None else {}
    if wanted:
        if ns == namespace and wanted.items() <= labels.items():
            return "workload"
        return None
    if ns == namespace:
        return "namespace"
    return "mesh" if ns == MESH_ROOT else None


def peer_mode(index: MeshIndex, namespace: str, labels: dict[str, str],
              port: int | None = None) -> str:
    """STRICT, PERMISSIVE or DISABLE for a workload (and its app port, when known)."""
    found: dict[str, object] = {}
    for pa in sorted(index.peer_authentications, key=order_key):
        level = _selected(pa, namespace, labels)
        if level is not None:
            found.setdefault(level, pa)  # the first by name wins, as the oldest does in Istio
    mode = DEFAULT_MODE
    for level in ("mesh", "namespace", "workload"):
        pa = found.get(level)
        if pa is None:
            continue
        s = spec(pa)
        if s.mtls is not None and s.mtls.mode != "UNSET":
            mode = s.mtls.mode
        if level == "workload" and port is not None:
            at_port = s.port_level_mtls.get(port)
            if at_port is not None and at_port.mode != "UNSET":
                mode = at_port.mode
    return mode


# -- the inbound listener ---------------------------------------------------------------------

def _sds_context(context) -> None:
    common = context.common_tls_context
    common.tls_certificate_sds_secret_configs.add(name="default")
    common.combined_validation_context.validation_context_sds_secret_config.name = "ROOTCA"
    common.combined_validation_context.default_validation_context.SetInParent()


def downstream_socket() -> base_pb2.TransportSocket:
    ctx = tls_pb2.DownstreamTlsContext()
    _sds_context(ctx)
    ctx.require_client_certificate.value = True
    socket = base_pb2.TransportSocket(name=TLS_SOCKET)
    socket.typed_config.Pack(ctx)
    return socket


def upstream_socket(peers: Iterable[str] = ()) -> base_pb2.TransportSocket:
    """Our workload certificate, the mesh bundle, and, when `peers` is not empty, the
    SPIFFE IDs of which the server must present one (URI SAN, exact)."""
    ctx = tls_pb2.UpstreamTlsContext()
    _sds_context(ctx)
    validation = ctx.common_tls_context.combined_validation_context.default_validation_context
    for peer in peers:
        validation.match_typed_subject_alt_names.add(
            san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=StringMatcher(exact=peer))
    socket = base_pb2.TransportSocket(name=TLS_SOCKET)
    socket.typed_config.Pack(ctx)
    return socket


def secure_inbound(index: MeshIndex, proxy, listener: listener_pb2.Listener) -> None:
    """Add the workload's authorization filters and transport to its inbound listener."""
    labels = workload_labels(proxy.app, proxy.labels)
    filters = authz_filters(index, proxy.namespace, labels, app_port=proxy.app_port)
    chain = listener.filter_chains[0]
    if filters:
        hcm = hcm_pb2.HttpConnectionManager()
        chain.filters[0].typed_config.Unpack(hcm)
        existing = list(hcm.http_filters)
        del hcm.http_filters[:]
        hcm.http_filters.extend(filters + existing)
        chain.filters[0].typed_config.Pack(hcm)
    if not proxy.mtls:
        return  # no certificate to serve TLS with
    mode = peer_mode(index, proxy.namespace, labels, proxy.app_port)
    if mode == "STRICT":
        chain.transport_socket.CopyFrom(downstream_socket())
    elif mode == "PERMISSIVE":
        plain = listener_components_pb2.FilterChain()
        plain.CopyFrom(chain)
        plain.filter_chain_match.transport_protocol = "raw_buffer"
        chain.filter_chain_match.transport_protocol = "tls"
        chain.transport_socket.CopyFrom(downstream_socket())
        listener.filter_chains.append(plain)
        inspector = listener.listener_filters.add(name=TLS_INSPECTOR)
        inspector.typed_config.Pack(tls_inspector_pb2.TlsInspector())


# -- authorization ----------------------------------------------------------------------------

def authz_filters(index: MeshIndex, namespace: str, labels: dict[str, str], *,
                  app_port: int | None) -> list[hcm_pb2.HttpFilter]:
    by_action: dict[str, dict[str, rbac_pb2.Policy]] = {}
    for ap in sorted(index.authorization_policies, key=order_key):
        if _selected(ap, namespace, labels) is None:
            continue
        s = spec(ap)
        policies = by_action.setdefault(s.action, {})
        for i, rule in enumerate(s.rules):
            name = f"ns[{ap.metadata.namespace}]-policy[{ap.metadata.name}]-rule[{i}]"
            policies[name] = _policy(rule, app_port)
    out = []
    for action in ("DENY", "ALLOW", "AUDIT"):
        if action not in by_action:
            continue
        if action != "ALLOW" and not by_action[action]:
            continue  # DENY or AUDIT without rules matches nothing: no filter needed
        config = rbac_filter_pb2.RBAC()
        config.rules.action = _ACTIONS[action]
        for name, policy in by_action[action].items():
            config.rules.policies[name].CopyFrom(policy)
        f = hcm_pb2.HttpFilter(name=RBAC_FILTER)
        f.typed_config.Pack(config)
        out.append(f)
    return out


def _string(value: str, *, prefix: str = "", ignore_case: bool = False) -> StringMatcher:
    """Istio's string forms: exact, `prefix*`, `*suffix`, `*` (anything)."""
    if value == "*":
        return StringMatcher(safe_regex={"regex": ".+"})
    if value.endswith("*"):
        return StringMatcher(prefix=prefix + value[:-1], ignore_case=ignore_case)
    if value.startswith("*"):
        return StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    return StringMatcher(exact=prefix + value, ignore_case=ignore_case)


def _principal_name(value: str) -> Principal:
    return Principal(authenticated=Principal.Authenticated(
        principal_name=_string(value, prefix="spiffe://")))


def _namespace(value: str) -> Principal:
    if value == "*":
        pattern = r".*/ns/[^/]+/.*"
    elif value.endswith("*"):
        pattern = rf".*/ns/{re.escape(value[:-1])}[^/]*/.*"
    elif value.startswith("*"):
        pattern = rf".*/ns/[^/]*{re.escape(value[1:])}/.*"
    else:
        pattern = rf".*/ns/{re.escape(value)}/.*"
    return Principal(authenticated=Principal.Authenticated(
        principal_name=StringMatcher(safe_regex={"regex": pattern})))


def _cidr(value: str, field: str) -> Principal:
    address, _, length = value.partition("/")
    bits = int(length) if length else (128 if ":" in address else 32)
    return Principal(**{field: address_pb2.CidrRange(address_prefix=address,
                                                     prefix_len={"value": bits})})


def _header_principal(name: str, value: str) -> Principal:
    return Principal(header=_header(name, value))


def _header(name: str, value: str) -> route_components_pb2.HeaderMatcher:
    if value == "*":
        return route_components_pb2.HeaderMatcher(name=name, present_match=True)
    return route_components_pb2.HeaderMatcher(
        name=name, string_match=_string(value, ignore_case=name == ":authority"))


def _any_principal(items: list[Principal]) -> Principal:
    return items[0] if len(items) == 1 else Principal(or_ids={"ids": items})


def _any_permission(items: list[Permission]) -> Permission:
    return items[0] if len(items) == 1 else Permission(or_rules={"rules": items})


def _all_principals(items: list[Principal]) -> Principal:
    if not items:
        return Principal(any=True)
    return items[0] if len(items) == 1 else Principal(and_ids={"ids": items})


def _all_permissions(items: list[Permission]) -> Permission:
    if not items:
        return Permission(any=True)
    return items[0] if len(items) == 1 else Permission(and_rules={"rules": items})


def _field(values: list[str], not_values: list[str], make, wrap_any, negate) -> list:
    out = []
    if values:
        out.append(wrap_any([make(v) for v in values]))
    if not_values:
        out.append(negate(wrap_any([make(v) for v in not_values])))
    return out


def _source(src) -> Principal:
    neg = lambda p: Principal(not_id=p)  # noqa: E731
    parts = []
    parts += _field(src.principals, src.not_principals, _principal_name, _any_principal, neg)
    parts += _field(src.namespaces, src.not_namespaces, _namespace, _any_principal, neg)
    parts += _field(src.ip_blocks, src.not_ip_blocks, lambda v: _cidr(v, "direct_remote_ip"),
                    _any_principal, neg)
    parts += _field(src.remote_ip_blocks, src.not_remote_ip_blocks,
                    lambda v: _cidr(v, "remote_ip"), _any_principal, neg)
    return _all_principals(parts)


def _port_decided(ports: list[str], not_ports: list[str], app_port: int | None) -> bool:
    """Whether the app's port satisfies ports / notPorts (decided here, see above)."""
    port = str(app_port) if app_port else ""
    if ports and port not in ports:
        return False
    return not (not_ports and port in not_ports)


def _never() -> Permission:
    return Permission(not_rule=Permission(any=True))


def _operation(op, app_port: int | None) -> Permission:
    neg = lambda p: Permission(not_rule=p)  # noqa: E731
    parts = []
    parts += _field(op.methods, op.not_methods,
                    lambda v: Permission(header=_header(":method", v)), _any_permission, neg)
    parts += _field(op.paths, op.not_paths, lambda v: Permission(
        url_path={"path": _string(v) if v != "*" else StringMatcher(safe_regex={"regex": ".*"})}),
        _any_permission, neg)
    parts += _field(op.hosts, op.not_hosts,
                    lambda v: Permission(header=_header(":authority", v)), _any_permission, neg)
    if (op.ports or op.not_ports) and not _port_decided(op.ports, op.not_ports, app_port):
        parts.append(_never())
    return _all_permissions(parts)


def _policy(rule, app_port: int | None) -> rbac_pb2.Policy:
    who: list[Principal] = []
    what: list[Permission] = []
    if rule.from_:
        who.append(_any_principal([_source(f.source) for f in rule.from_]))
    if rule.to:
        what.append(_any_permission([_operation(t.operation, app_port) for t in rule.to]))
    neg_p = lambda p: Principal(not_id=p)  # noqa: E731
    for cond in rule.when:
        key = cond.key
        if key.startswith("request.headers["):
            name = key[len("request.headers["):-1].lower()
            who += _field(cond.values, cond.not_values, lambda v: _header_principal(name, v),
                          _any_principal, neg_p)
        elif key in ("source.ip", "remote.ip"):
            field = "direct_remote_ip" if key == "source.ip" else "remote_ip"
            who += _field(cond.values, cond.not_values, lambda v: _cidr(v, field),
                          _any_principal, neg_p)
        elif key == "source.namespace":
            who += _field(cond.values, cond.not_values, _namespace, _any_principal, neg_p)
        elif key == "source.principal":
            who += _field(cond.values, cond.not_values, _principal_name, _any_principal, neg_p)
        elif key == "destination.port" and not _port_decided(cond.values, cond.not_values,
                                                             app_port):
            what.append(_never())
    return rbac_pb2.Policy(permissions=[_all_permissions(what)],
                           principals=[_all_principals(who)])


# -- auto mTLS --------------------------------------------------------------------------------

def mtls_peer(index: MeshIndex, instance: Instance) -> str | None:
    """Whom a caller's sidecar must find at `instance` over mTLS: the SPIFFE ID that
    registered it; "" for an instance that takes mTLS by its label alone (registered
    without authentication: any mesh certificate); None when callers use plaintext."""
    if instance.spiffe_id:
        try:
            namespace = SpiffeId.parse(instance.spiffe_id).namespace
        except ValueError:
            return None  # the registry stores only parsed IDs; never trust anything else
        peer = instance.spiffe_id
    elif instance.labels.get(TLS_LABEL) == "true":
        namespace = instance.labels.get(NAMESPACE_LABEL) or "default"
        peer = ""
    else:
        return None
    labels = workload_labels(instance.service, instance.labels)
    return None if peer_mode(index, namespace, labels) == "DISABLE" else peer


def _peer(index: MeshIndex, instance: Instance) -> str | None:
    return index.memo(("mtls_peer", instance.service, instance.instance_id),
                      lambda: mtls_peer(index, instance))


def _mark(peer: str) -> dict[str, str]:
    """EDS metadata of an mTLS endpoint, and the match of its cluster entry."""
    if not peer:
        return {TLS_MODE_KEY: TLS_MODE_VALUE}
    return {TLS_MODE_KEY: TLS_MODE_VALUE, IDENTITY_KEY: peer}


def secure_cluster(cluster: cluster_pb2.Cluster, index: MeshIndex,
                   instances: list[Instance]) -> None:
    """A caller that holds a certificate: mTLS to the endpoints EDS marks, each held to
    the identity that registered it (see the module note). `instances`: the cluster's."""
    peers = {_peer(index, i) for i in instances} - {None}
    names = sorted(peers - {""})
    base = f"{TLS_MODE_KEY}-{TLS_MODE_VALUE}"
    for name in names:
        entry = cluster.transport_socket_matches.add(name=f"{base}-{name}")
        entry.match.update(_mark(name))
        entry.transport_socket.CopyFrom(upstream_socket([name]))
    entry = cluster.transport_socket_matches.add(name=base)
    entry.match.update(_mark(""))
    entry.transport_socket.CopyFrom(upstream_socket([] if "" in peers else names))


def mark_endpoints(index: MeshIndex, assignment, host: str) -> None:
    """Mark the endpoints of `assignment` whose instances take mTLS (see the module note)."""
    service = index.service(host)
    if service is None:
        return
    marks = {}
    for inst in service.instances:
        peer = _peer(index, inst)
        if peer is not None:
            marks.setdefault((inst.address, inst.port), _mark(peer))
    if not marks:
        return
    for locality in assignment.endpoints:
        for lb in locality.lb_endpoints:
            sa = lb.endpoint.address.socket_address
            mark = marks.get((sa.address, sa.port_value))
            if mark is not None:
                lb.metadata.filter_metadata[SOCKET_MATCH].update(mark)
