"""Opening a TLS connection to an upstream endpoint (mTLS to another sidecar).

The cluster's connect path calls this only for endpoints whose compiled `tls` is set;
plaintext endpoints never come here. The client context (our workload certificate, the
mesh trust bundle) is looked up per connection, so a renewed certificate is presented
from the next connection on. After the handshake the server's SPIFFE ID is checked
against the cluster's `match_subject_alt_names`; a server that is not the one expected
is closed and the attempt fails like a refused connect.
"""

from __future__ import annotations

import asyncio
import ssl

from plait.dataplane.net.tls_store import TlsStore, name_accepted, peer_identity

HANDSHAKE_TIMEOUT = 10.0  # seconds; the cluster's connect_timeout usually ends it sooner


class UpstreamTlsError(ssl.SSLError):
    """No certificate to present, or the server is not who the cluster expects."""


async def connect(loop: asyncio.AbstractEventLoop, factory, endpoint, store: TlsStore):
    """(transport, protocol) of a verified TLS connection to `endpoint`. Raises OSError,
    ssl.SSLError (UpstreamTlsError for a refused peer or missing material)."""
    tls = endpoint.tls
    ctx = store.client(tls)
    if ctx is None:
        raise UpstreamTlsError("no workload certificate to present")
    transport, protocol = await loop.create_connection(
        factory, endpoint.host, endpoint.port, ssl=ctx, server_hostname=tls.sni or None,
        ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
    peer = peer_identity(transport.get_extra_info("ssl_object"))
    if not name_accepted(tls.peer_names, peer):
        transport.abort()
        raise UpstreamTlsError(f"upstream identity {peer or 'none'} is not accepted")
    return transport, protocol
