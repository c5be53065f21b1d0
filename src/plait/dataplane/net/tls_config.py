"""TLS settings from xDS, compiled to plain objects: listeners, clusters and endpoints.

Accepted shapes (anything else is a ConfigError naming the field):

- A cluster's `transport_socket` `envoy.transport_sockets.tls` (UpstreamTlsContext), and
  `transport_socket_matches` chosen per endpoint by its `envoy.transport_socket_match`
  metadata, as Istio's auto mTLS sends them. The resolved setting is stored on each
  endpoint, so an endpoint that moves between plaintext and TLS gets fresh connections.
- A listener with one filter chain carrying a `transport_socket` (DownstreamTlsContext):
  TLS only (Istio's STRICT). A listener with the `envoy.filters.listener.tls_inspector`
  listener filter and two chains that differ only in `filter_chain_match.transport_protocol`
  ("tls" with the transport socket, "raw_buffer" without): TLS and plaintext on one port
  (Istio's PERMISSIVE).

Certificates come from the sidecar's workload identity, named by SDS as Istio names it
(`tls_certificate_sds_secret_configs: [{name: default}]`, validation from `ROOTCA`), or
from files (`tls_certificates[].certificate_chain.filename`, `trusted_ca.filename`).
Inline keys are refused: a private key does not travel in config. Peers are named by the
URI SAN (their SPIFFE ID): `match_subject_alt_names` / `match_typed_subject_alt_names`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from plait.core.errors import ConfigError
from plait.dataplane.config import HeaderMatch
from plait.dataplane.matchers import string_match

TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_SOCKET = "envoy.transport_sockets.raw_buffer"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
SDS_CERT = "default"  # Istio's name for the workload certificate
SDS_ROOTS = "ROOTCA"  # Istio's name for the trust bundle
SOCKET_MATCH = "envoy.transport_socket_match"
_SAN_URI = 3


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where certificate, key and trust bundle come from; "" is the workload identity."""

    cert_chain: str = ""
    key: str = ""
    bundle: str = ""


@dataclass(frozen=True, slots=True)
class PeerTls:
    """One side's TLS: our certificate, whom we trust, whom we accept."""

    files: TlsFiles = TlsFiles()
    peer_names: tuple[HeaderMatch, ...] = ()  # any of them must match the URI SAN
    require_peer_cert: bool = True
    sni: str = ""


@dataclass(frozen=True, slots=True)
class ListenerTransport:
    tls: PeerTls
    permissive: bool = False  # plaintext accepted beside TLS on the same port


@dataclass(frozen=True, slots=True)
class ClusterTls:
    default: PeerTls | None
    matches: tuple[tuple[tuple[tuple[str, str], ...], PeerTls | None], ...] = ()


def _file(ds, path: str) -> str:
    which = ds.WhichOneof("specifier")
    if which != "filename":
        raise ConfigError(path, "give a filename (inline keys and certificates are refused)")
    return ds.filename


def _common(ctx, path: str) -> tuple[TlsFiles, tuple[HeaderMatch, ...]]:
    certs, keyfile, bundle = "", "", ""
    if len(ctx.tls_certificates) + len(ctx.tls_certificate_sds_secret_configs) > 1:
        raise ConfigError(f"{path}.tls_certificates", "at most one certificate")
    if ctx.tls_certificates:
        tc = ctx.tls_certificates[0]
        certs = _file(tc.certificate_chain, f"{path}.tls_certificates[0].certificate_chain")
        keyfile = _file(tc.private_key, f"{path}.tls_certificates[0].private_key")
    elif ctx.tls_certificate_sds_secret_configs:
        name = ctx.tls_certificate_sds_secret_configs[0].name
        if name != SDS_CERT:
            raise ConfigError(f"{path}.tls_certificate_sds_secret_configs[0].name",
                              f"only {SDS_CERT!r} (the workload certificate) is served")
    which = ctx.WhichOneof("validation_context_type")
    validation = None
    if which == "validation_context":
        validation = ctx.validation_context
    elif which == "validation_context_sds_secret_config":
        _roots(ctx.validation_context_sds_secret_config, f"{path}.{which}")
    elif which == "combined_validation_context":
        combined = ctx.combined_validation_context
        _roots(combined.validation_context_sds_secret_config,
               f"{path}.combined_validation_context.validation_context_sds_secret_config")
        validation = combined.default_validation_context
    elif which is not None:
        raise ConfigError(f"{path}.{which}", "unsupported validation context")
    names: list[HeaderMatch] = []
    if validation is not None:
        vpath = f"{path}.validation_context"
        if validation.HasField("trusted_ca"):
            bundle = _file(validation.trusted_ca, f"{vpath}.trusted_ca")
        for i, sm in enumerate(validation.match_subject_alt_names):
            names.append(string_match(sm, b"", False, f"{vpath}.match_subject_alt_names[{i}]"))
        for i, typed in enumerate(validation.match_typed_subject_alt_names):
            tpath = f"{vpath}.match_typed_subject_alt_names[{i}]"
            if typed.san_type != _SAN_URI:
                raise ConfigError(f"{tpath}.san_type", "peers are named by URI (SPIFFE ID)")
            names.append(string_match(typed.matcher, b"", False, f"{tpath}.matcher"))
    return TlsFiles(certs, keyfile, bundle), tuple(names)


def _roots(sds, path: str) -> None:
    if sds.name != SDS_ROOTS:
        raise ConfigError(f"{path}.name", f"only {SDS_ROOTS!r} (the trust bundle) is served")


def transport_socket(ts, path: str, *, upstream: bool) -> PeerTls | None:
    """A `transport_socket`; None for raw_buffer (plaintext)."""
    if ts.name == RAW_SOCKET:
        return None
    if ts.name != TLS_SOCKET:
        raise ConfigError(f"{path}.name", f"unsupported transport socket {ts.name!r}")
    msg = tls_pb2.UpstreamTlsContext() if upstream else tls_pb2.DownstreamTlsContext()
    if not ts.typed_config.Unpack(msg):
        raise ConfigError(f"{path}.typed_config", f"expected {msg.DESCRIPTOR.full_name}")
    files, names = _common(msg.common_tls_context, f"{path}.typed_config.common_tls_context")
    if upstream:
        return PeerTls(files, names, sni=msg.sni)
    require = (msg.require_client_certificate.value
               if msg.HasField("require_client_certificate") else False)
    return PeerTls(files, names, require_peer_cert=require)


# -- listeners ---------------------------------------------------------------------------

def _match_protocol(chain, path: str) -> str:
    m = chain.filter_chain_match
    for field, _ in m.ListFields():
        if field.name != "transport_protocol":
            raise ConfigError(f"{path}.filter_chain_match.{field.name}",
                              "only transport_protocol is supported")
    return m.transport_protocol


def listener_chain(lis, path: str):
    """(index, the filter chain whose network filters serve, ListenerTransport or None)."""
    chains = lis.filter_chains
    if len(chains) == 1:
        chain = chains[0]
        proto = _match_protocol(chain, f"{path}.filter_chains[0]")
        tls = None
        if chain.HasField("transport_socket"):
            tls = transport_socket(chain.transport_socket,
                                   f"{path}.filter_chains[0].transport_socket", upstream=False)
        if proto == "tls" and tls is None:
            raise ConfigError(f"{path}.filter_chains[0].transport_socket",
                              "a chain matching TLS needs a TLS transport socket")
        return 0, chain, (ListenerTransport(tls) if tls is not None else None)
    if len(chains) != 2 or not any(c.HasField("transport_socket") for c in chains):
        raise ConfigError(f"{path}.filter_chains", "one filter chain, or two for TLS and "
                          "plaintext on one port (transport_protocol tls / raw_buffer)")
    if not any(f.name == TLS_INSPECTOR for f in lis.listener_filters):
        raise ConfigError(f"{path}.listener_filters", f"two filter chains need {TLS_INSPECTOR}")
    by_proto = {}
    for i, chain in enumerate(chains):
        proto = _match_protocol(chain, f"{path}.filter_chains[{i}]") or "raw_buffer"
        if proto not in ("tls", "raw_buffer") or proto in by_proto:
            raise ConfigError(f"{path}.filter_chains[{i}].filter_chain_match.transport_protocol",
                              "the two chains must match 'tls' and 'raw_buffer'")
        by_proto[proto] = i
    t, r = by_proto["tls"], by_proto["raw_buffer"]
    if not chains[t].HasField("transport_socket"):
        raise ConfigError(f"{path}.filter_chains[{t}].transport_socket", "required for tls")
    if chains[r].HasField("transport_socket") and chains[r].transport_socket.name != RAW_SOCKET:
        raise ConfigError(f"{path}.filter_chains[{r}].transport_socket",
                          "the raw_buffer chain is plaintext")
    if [f.SerializeToString(deterministic=True) for f in chains[t].filters] != \
            [f.SerializeToString(deterministic=True) for f in chains[r].filters]:
        raise ConfigError(f"{path}.filter_chains", "the tls and raw_buffer chains must carry "
                          "the same network filters")
    tls = transport_socket(chains[t].transport_socket,
                           f"{path}.filter_chains[{t}].transport_socket", upstream=False)
    return t, chains[t], ListenerTransport(tls, permissive=True)


# -- clusters ----------------------------------------------------------------------------

def cluster_tls(c, path: str) -> ClusterTls | None:
    """The cluster's TLS settings; None when every endpoint is plaintext."""
    default = None
    if c.HasField("transport_socket"):
        default = transport_socket(c.transport_socket, f"{path}.transport_socket", upstream=True)
    matches = []
    for i, m in enumerate(c.transport_socket_matches):
        mpath = f"{path}.transport_socket_matches[{i}]"
        items = []
        for key, value in sorted(m.match.fields.items()):
            if value.WhichOneof("kind") != "string_value":
                raise ConfigError(f"{mpath}.match.{key}", "match values must be strings")
            items.append((key, value.string_value))
        tls = transport_socket(m.transport_socket, f"{mpath}.transport_socket", upstream=True)
        matches.append((tuple(items), tls))
    if default is None and not any(tls is not None for _, tls in matches):
        return None
    return ClusterTls(default, tuple(matches))


def _socket_labels(cla) -> dict[tuple[str, int], dict[str, str]]:
    out = {}
    for locality in cla.endpoints:
        for lb in locality.lb_endpoints:
            meta = lb.metadata.filter_metadata.get(SOCKET_MATCH)
            if meta is not None:
                sa = lb.endpoint.address.socket_address
                out[(sa.address, sa.port_value)] = {
                    k: v.string_value for k, v in meta.fields.items()
                    if v.WhichOneof("kind") == "string_value"}
    return out


def resolve_endpoints(endpoints: tuple, tls: ClusterTls, cla) -> tuple:
    """Each endpoint with the TLS it gets: the first transport_socket_match whose labels
    its metadata holds, else the cluster's transport_socket (Envoy's rule)."""
    labels = _socket_labels(cla) if tls.matches else {}
    out = []
    for ep in endpoints:
        chosen = tls.default
        mine = labels.get((ep.host, ep.port), {})
        for wanted, socket in tls.matches:
            if all(mine.get(k) == v for k, v in wanted):
                chosen = socket
                break
        out.append(replace(ep, tls=chosen) if chosen is not None else ep)
    return tuple(out)
