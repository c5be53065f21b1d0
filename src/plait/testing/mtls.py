"""Mutual TLS for tests: workload identities on disk, xDS TLS shapes, and a TLS client.

Why: the sidecar's TLS paths (STRICT and PERMISSIVE listeners, TLS clusters, RBAC by
peer identity) are tested with real handshakes between real processes; tests should say
"alice calls with her certificate" in one line. How: `issue_identity` has a mesh CA
(`plait.controlplane.ca.Authority`, on disk in a temporary directory) sign a fresh key's
certificate and writes key (0600), chain and bundle the way the sidecar keeps its own;
the builders return the Envoy dicts Istio would send (files instead of SDS, so a static
bootstrap can use them); `request` makes one HTTP/1.1 request over TLS or plaintext.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from pathlib import Path

from plait.security import keys
from plait.security.files import write_file
from plait.security.tls import client_context
from plait.security.workload import IdentityFiles

TLS = "envoy.transport_sockets.tls"
DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
INSPECTOR = {"name": "envoy.filters.listener.tls_inspector", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3."
             "TlsInspector"}}
RBAC = "envoy.filters.http.rbac"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def issue_identity(ca, directory: str | Path, *, namespace: str = "default",
                   account: str = "default") -> IdentityFiles:
    """A workload identity `spiffe://<td>/ns/<namespace>/sa/<account>` signed by `ca`
    (an Authority), written to `directory` as key.pem, cert.pem and bundle.pem."""
    files = IdentityFiles(directory)
    key = files.ensure_key()
    uri = f"spiffe://{ca.trust_domain}/ns/{namespace}/sa/{account}"
    issued = ca.issue_workload(key.public_key(), spiffe_uri=uri)
    write_file(files.bundle, issued.bundle_pem.encode())
    write_file(files.cert_chain, issued.chain_pem.encode())
    return files


def spiffe(ca, namespace: str, account: str) -> str:
    return f"spiffe://{ca.trust_domain}/ns/{namespace}/sa/{account}"


def _common(identity: IdentityFiles | None, peer_names: list[dict]) -> dict:
    if identity is None:  # the sidecar's own identity, as Istio names it
        common: dict = {"tls_certificate_sds_secret_configs": [{"name": "default"}],
                        "combined_validation_context": {
                            "default_validation_context": {},
                            "validation_context_sds_secret_config": {"name": "ROOTCA"}}}
        validation = common["combined_validation_context"]["default_validation_context"]
    else:
        common = {"tls_certificates": [{
            "certificate_chain": {"filename": str(identity.cert_chain)},
            "private_key": {"filename": str(identity.key)}}],
            "validation_context": {"trusted_ca": {"filename": str(identity.bundle)}}}
        validation = common["validation_context"]
    if peer_names:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": m} for m in peer_names]
    return common


def downstream_tls(identity: IdentityFiles | None = None, *, require_client: bool = True,
                   peer_names: list[dict] = ()) -> dict:
    """A listener's `transport_socket`; `identity` None: the sidecar's own (SDS)."""
    return {"name": TLS, "typed_config": {
        "@type": DOWNSTREAM, "common_tls_context": _common(identity, list(peer_names)),
        "require_client_certificate": require_client}}


def upstream_tls(identity: IdentityFiles | None = None, *, peer_names: list[dict] = ()) -> dict:
    """A cluster's `transport_socket`; `identity` None: the sidecar's own (SDS)."""
    return {"name": TLS, "typed_config": {
        "@type": UPSTREAM, "common_tls_context": _common(identity, list(peer_names))}}


def strict(listener: dict, socket_: dict) -> dict:
    """`listener` (a testing.sidecar.listener dict) accepting TLS only."""
    listener["filter_chains"][0]["transport_socket"] = socket_
    return listener


def permissive(listener: dict, socket_: dict) -> dict:
    """`listener` accepting TLS and plaintext on its port, in Istio's shape."""
    chain = listener["filter_chains"][0]
    listener["listener_filters"] = [INSPECTOR]
    listener["filter_chains"] = [
        {"filter_chain_match": {"transport_protocol": "tls"}, "filters": chain["filters"],
         "transport_socket": socket_},
        {"filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": chain["filters"]},
    ]
    return listener


def rbac_filter(action: str, policies: dict) -> dict:
    """An `envoy.filters.http.rbac` entry for a listener's http_filters."""
    return {"name": RBAC, "typed_config": {"@type": RBAC_TYPE, "rules": {
        "action": action, "policies": policies}}}


def context(identity: IdentityFiles) -> ssl.SSLContext:
    """A client context presenting `identity` and trusting its bundle."""
    return client_context(cert_chain=identity.cert_chain, key=identity.key,
                          bundle=identity.bundle)


def bare_context(bundle: Path) -> ssl.SSLContext:
    """A client context with no certificate of its own, trusting `bundle`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(bundle))
    return ctx


def request(port: int, path: str = "/", *, tls: ssl.SSLContext | None = None,
            method: str = "GET", headers: dict | None = None, host: str = "svc",
            timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:port over TLS (`tls`) or plaintext; (status, headers,
    body). Raises OSError / ssl.SSLError when the connection or handshake fails."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if tls is not None:
            sock = tls.wrap_socket(sock)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.sock = sock
        conn.request(method, path, headers={"host": host, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        sock.close()


def key_pem_of(identity: IdentityFiles) -> bytes:
    """The private key's PEM, for tests that check it never shows up anywhere."""
    return keys.key_pem(keys.load_key(identity.key))
