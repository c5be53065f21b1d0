"""The TLS material of one process: `ssl.SSLContext`s built from files, rebuilt when the
files change.

Why files: the main process renews the workload certificate and fetches the trust bundle
(`plait.dataplane.identity`), writing each file atomically; every worker process reads
them here. A context is looked up when a connection starts (an accept, an upstream
connect), and at most once a second the files' stat is compared with what the context was
built from, so a renewed certificate or a rotated bundle applies to the next handshake
while connections already open carry on untouched. Material that fails to load keeps the
last good context; with none at all the caller refuses the connection (fail closed).
"""

from __future__ import annotations

import os
import ssl
import sys
import time

from plait.dataplane.config import HeaderMatch
from plait.dataplane.net.tls_config import PeerTls, TlsFiles

# plait.security (and with it `cryptography`) is imported on first use only: a sidecar
# that never speaks TLS does not carry it.

RECHECK = 1.0  # seconds between stat checks of one context's files


def _stamp(paths: tuple[str, ...]) -> tuple | None:
    try:
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in map(os.stat, paths))
    except OSError:
        return None


class _Entry:
    __slots__ = ("context", "stamp", "checked")

    def __init__(self) -> None:
        self.context: ssl.SSLContext | None = None
        self.stamp: tuple | None = None
        self.checked = -RECHECK


class TlsStore:
    def __init__(self, identity: TlsFiles | None = None, *, clock=time.monotonic) -> None:
        """`identity`: the workload certificate, key and bundle files that "" stands for
        in compiled settings (None: this sidecar has no identity)."""
        self.identity = identity
        self.clock = clock
        self.failures = 0
        self._entries: dict[tuple, _Entry] = {}

    def _paths(self, files: TlsFiles) -> tuple[str, str, str] | None:
        ident = self.identity
        if ident is None and not (files.cert_chain and files.bundle):
            return None
        return (files.cert_chain or ident.cert_chain, files.key or ident.key,
                files.bundle or ident.bundle)

    def server(self, tls: PeerTls) -> ssl.SSLContext | None:
        return self._get(tls.files, server=True, require=tls.require_peer_cert)

    def client(self, tls: PeerTls) -> ssl.SSLContext | None:
        return self._get(tls.files, server=False, require=True)

    def refresh(self) -> None:
        """Look at the files on the next use, whatever the time (after a renewal)."""
        for entry in self._entries.values():
            entry.checked = -RECHECK

    def _get(self, files: TlsFiles, *, server: bool, require: bool) -> ssl.SSLContext | None:
        paths = self._paths(files)
        if paths is None:
            return None
        key = (paths, server, require)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        now = self.clock()
        if now - entry.checked < RECHECK:
            return entry.context
        entry.checked = now
        stamp = _stamp(paths)
        if stamp is None or stamp == entry.stamp:
            return entry.context
        from plait.security import tls as mtls

        try:
            cert, key_file, bundle = paths
            if server:
                ctx = mtls.server_context(cert_chain=cert, key=key_file, bundle=bundle,
                                          require_client_cert=require)
            else:
                ctx = mtls.client_context(cert_chain=cert, key=key_file, bundle=bundle)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.failures += 1
            print(f"plait sidecar: cannot load TLS material ({exc.__class__.__name__}); "
                  "keeping the last good one", file=sys.stderr, flush=True)
            return entry.context
        entry.context, entry.stamp = ctx, stamp
        return ctx


def peer_identity(ssl_object) -> str | None:
    """The verified peer's SPIFFE ID (a URI); "" for a certificate without one; None when
    the peer sent no certificate."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if der is None:
        return None
    from plait.security.spiffe import spiffe_id_of

    try:
        return spiffe_id_of(der).uri
    except ValueError:
        return ""


def name_accepted(names: tuple[HeaderMatch, ...], identity: str | None) -> bool:
    """Whether a peer named `identity` satisfies `match_subject_alt_names` (any of them;
    none configured: any verified peer)."""
    if not names:
        return True
    if not identity:
        return False
    value = identity.encode()
    for cond in names:
        if cond.exact is not None:
            ok = value == cond.exact
        elif cond.prefix is not None:
            ok = value.startswith(cond.prefix)
        else:
            ok = cond.matcher.fullmatch(value)
        if ok:
            return True
    return False
