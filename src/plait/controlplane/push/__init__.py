"""The push side of the control plane: the mesh, translated to xDS v3 and served over ADS.

    async with start_push(view, "127.0.0.1", 0) as push:
        push.port              # the bound port (0 asks for a free one)
        push.proxy_status()    # rows for GET /api/v1/proxies
        push.counters()        # pushes, acks, nacks, connected_proxies, ...

`translate` turns the mesh into resources for one proxy, `ads` serves them and follows
ACKs and NACKs, `status` keeps the ledger. docs/xds.md describes what is served.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from plait.controlplane.mesh import MeshView
from plait.controlplane.push.ads import DEBOUNCE_MAX, DEBOUNCE_QUIET, PushServer
from plait.controlplane.push.proxy import ProxyInfo

__all__ = ["ProxyInfo", "PushServer", "start_push"]


@asynccontextmanager
async def start_push(view: MeshView, host: str = "127.0.0.1", port: int = 0, *,
                     quiet: float = DEBOUNCE_QUIET,
                     max_delay: float = DEBOUNCE_MAX,
                     credentials=None) -> AsyncIterator[PushServer]:
    """Serve xDS for `view` on host:port until the block exits; yields the `PushServer`.
    With `credentials` (grpc.ServerCredentials) the port speaks TLS.

    Raises OSError when the address cannot be bound.
    """
    server = PushServer(view, quiet=quiet, max_delay=max_delay)
    async with server.serving(host, port, credentials=credentials):
        yield server
