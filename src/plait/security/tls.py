"""`ssl.SSLContext`s for mutual TLS between workloads, and the peer's SPIFFE ID.

Both sides present their certificate chain and verify the other's against the mesh trust
bundle only (never the system's CAs). Host names are not checked: in a mesh the peer is
named by its SPIFFE ID, which the caller checks after the handshake with `peer_id` or
`require_peer`. Every certificate in the bundle is a trust anchor
(`VERIFY_X509_PARTIAL_CHAIN`), so an operator's intermediate CA can anchor the mesh.

TLS 1.2 is the floor (as in Istio), with forward-secret AEAD suites only; TLS 1.3 is
negotiated whenever both sides have it, which for two Plait sidecars is always.

Certificates are renewed while servers run. `ReloadingServerContext` keeps one outer
context for the listening socket and, during each handshake (the SNI callback runs for
every ClientHello, with or without a server name), switches the connection to the newest
inner context, so a renewed certificate or a changed bundle applies to the next handshake
without re-binding anything.
"""

from __future__ import annotations

import os
import ssl
from typing import Iterable

from plait.security.spiffe import SpiffeId, spiffe_id_of

_CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"


class PeerRejected(ssl.SSLError):
    """The peer completed the handshake but is not who the caller accepts."""


def _base(purpose: int, *, cert_chain: str | os.PathLike, key: str | os.PathLike,
          bundle: str | os.PathLike) -> ssl.SSLContext:  # fmt: skip
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_CIPHERS_TLS12)
    ctx.load_cert_chain(cert_chain, key)
    ctx.load_verify_locations(cafile=os.fspath(bundle))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    return ctx


def server_context(*, cert_chain: str | os.PathLike, key: str | os.PathLike,
                   bundle: str | os.PathLike, require_client_cert: bool = True) -> ssl.SSLContext:  # fmt: skip
    """A server context presenting `cert_chain` (leaf first, then intermediates) and `key`,
    accepting clients whose chain verifies against `bundle`.

    With `require_client_cert=False` a client without a certificate is let in (its
    identity is then None), but one that presents a certificate must still verify: the
    mode for an API that takes bearer tokens as well as client certificates.
    Raises OSError / ssl.SSLError if a file is missing or does not parse.
    """
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, cert_chain=cert_chain, key=key, bundle=bundle)
    if not require_client_cert:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(*, cert_chain: str | os.PathLike, key: str | os.PathLike,
                   bundle: str | os.PathLike) -> ssl.SSLContext:  # fmt: skip
    """A client context presenting `cert_chain` and `key`, accepting only servers whose
    chain verifies against `bundle`. Check the server's ID with `require_peer`."""
    return _base(ssl.PROTOCOL_TLS_CLIENT, cert_chain=cert_chain, key=key, bundle=bundle)


def peer_id(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> SpiffeId | None:
    """The verified peer's SPIFFE ID; None if the peer sent no certificate.

    Only call after the handshake: the certificate was verified by then. ValueError if it
    verified but carries no valid SPIFFE ID.
    """
    der = ssl_object.getpeercert(binary_form=True)
    return None if der is None else spiffe_id_of(der)


def require_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket,
                 allowed: Iterable[SpiffeId] | None = None) -> SpiffeId:  # fmt: skip
    """The peer's SPIFFE ID, if it has one and (when `allowed` is given) it is allowed.

    Raises PeerRejected otherwise; the caller closes the connection.
    """
    try:
        peer = peer_id(ssl_object)
    except ValueError as exc:
        raise PeerRejected(f"peer certificate has no usable SPIFFE ID: {exc}") from None
    if peer is None:
        raise PeerRejected("peer presented no certificate")
    if allowed is not None and peer not in set(allowed):
        raise PeerRejected(f"peer {peer} is not allowed")
    return peer


class ReloadingServerContext:
    """A server context whose certificate, key and bundle can be replaced while serving.

    `context` is what to give to `create_server` / `wrap_socket`; `reload()` reads the
    files again (raising, and keeping the old material, if they are bad).
    """

    def __init__(self, *, cert_chain: str | os.PathLike, key: str | os.PathLike,
                 bundle: str | os.PathLike, require_client_cert: bool = True) -> None:  # fmt: skip
        self._files = {"cert_chain": cert_chain, "key": key, "bundle": bundle,
                       "require_client_cert": require_client_cert}  # fmt: skip
        self._current = server_context(**self._files)
        self.context = server_context(**self._files)
        self.context.sni_callback = self._pick
        self.reloads = 0

    def reload(self) -> None:
        self._current = server_context(**self._files)
        self.reloads += 1

    def _pick(self, ssl_object: ssl.SSLObject, server_name: str | None,
              _ctx: ssl.SSLContext) -> None:  # fmt: skip
        ssl_object.context = self._current
