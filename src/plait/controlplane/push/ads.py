"""The xDS v3 server: ADS plus the per-type discovery services, state of the world.

`PushServer` owns the current `MeshIndex`, the debouncer and the set of open streams.
A change reported by `MeshView.subscribe` starts a debounce window: the index is rebuilt
once the mesh has been quiet for `quiet` seconds, or `max_delay` after the first change
even if changes keep coming (Istio's PILOT_DEBOUNCE_AFTER is 100 ms, its MAX 10 s; ours
is shorter because the target is every proxy updated within a second). Each stream then
recomputes its own resources from the shared index and sends only what changed.

Handlers are registered with our own (de)serialisers: a request that does not parse is
handed to the stream as a marker and answered with INVALID_ARGUMENT and a counter,
instead of grpc's bare INTERNAL; responses are pre-serialised (see `stream.Response`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import AsyncIterator

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from plait.controlplane.mesh import MeshView
from plait.controlplane.push.index import MeshIndex
from plait.controlplane.push.status import PushStatus
from plait.controlplane.push.stream import MALFORMED, Response, Stream
from plait.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

log = logging.getLogger("plait.push")

DEBOUNCE_QUIET = 0.1
DEBOUNCE_MAX = 0.5

# service name → (method, fixed type URL or "" for ADS)
_SERVICES = {
    "envoy.service.discovery.v3.AggregatedDiscoveryService": ("StreamAggregatedResources", ""),
    "envoy.service.listener.v3.ListenerDiscoveryService": ("StreamListeners", LISTENER),
    "envoy.service.route.v3.RouteDiscoveryService": ("StreamRoutes", ROUTE),
    "envoy.service.cluster.v3.ClusterDiscoveryService": ("StreamClusters", CLUSTER),
    "envoy.service.endpoint.v3.EndpointDiscoveryService": ("StreamEndpoints", ENDPOINT),
}


def _parse_request(data: bytes):
    try:
        return discovery_pb2.DiscoveryRequest.FromString(data)
    except (DecodeError, RuntimeWarning, ValueError):
        return MALFORMED


def _serialize_response(response: Response) -> bytes:
    return response.serialize()


class PushServer:
    def __init__(self, view: MeshView, *, quiet: float = DEBOUNCE_QUIET,
                 max_delay: float = DEBOUNCE_MAX) -> None:
        self.view = view
        self.quiet = quiet
        self.max_delay = max_delay
        self.status = PushStatus()
        self.index = MeshIndex(view, revision=0)
        self.port = 0
        self.last_change_at: float | None = None  # monotonic; the change behind self.index
        self._streams: set[Stream] = set()
        self._shapes: dict[tuple, int] = {}
        self._dirty = asyncio.Event()
        self._first_change: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- what the control plane uses -------------------------------------------------
    def proxy_status(self) -> list[dict]:
        return self.status.proxy_status()

    def counters(self) -> dict[str, int]:
        return self.status.counters()

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int,
                      credentials=None) -> AsyncIterator[PushServer]:
        """Listen on host:port (0 picks a free port, see `.port`) until the block exits;
        over TLS with `credentials` (grpc.ServerCredentials)."""
        self._loop = asyncio.get_running_loop()
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers([self._handlers()])
        self.port = (server.add_secure_port(f"{host}:{port}", credentials) if credentials
                     else server.add_insecure_port(f"{host}:{port}"))
        if not self.port:
            raise OSError(f"cannot listen for xDS on {host}:{port}")
        unsubscribe = self.view.subscribe(self._on_mesh_change)
        await server.start()
        log.info("xDS push server listening on %s:%d", host, self.port)
        # Owned here rather than by a TaskGroup: a task group around `yield` would wrap
        # the caller's own exceptions in an ExceptionGroup.
        debouncer = asyncio.create_task(self._debounce(), name="push-debounce")
        try:
            yield self
        finally:
            unsubscribe()
            # xDS streams never end by themselves: no grace, cancel them now.
            await server.stop(None)
            debouncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await debouncer
            self._streams.clear()

    def shape_id(self, shape: tuple) -> int:
        """A small int standing for a proxy shape, the same for every stream of that shape."""
        return self._shapes.setdefault(shape, len(self._shapes))

    # --- change handling ---------------------------------------------------------------
    def _on_mesh_change(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._mark_dirty()
        elif self._loop is not None:  # a view that calls back from its own thread
            self._loop.call_soon_threadsafe(self._mark_dirty)

    def _mark_dirty(self) -> None:
        if self._first_change is None:
            self._first_change = time.monotonic()
        self._dirty.set()

    async def _debounce(self) -> None:
        while True:
            await self._dirty.wait()
            deadline = self._first_change + self.max_delay
            while True:
                self._dirty.clear()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._dirty.wait(), timeout=min(self.quiet, left))
                except TimeoutError:
                    break
            changed_at, self._first_change = self._first_change, None
            self._dirty.clear()
            self.rebuild(changed_at=changed_at)

    def rebuild(self, *, changed_at: float | None = None) -> None:
        """Read the mesh now and tell every stream; normally called by the debouncer."""
        try:
            index = MeshIndex(self.view, revision=self.index.revision + 1)
        except Exception:  # keep serving the last good index rather than crash
            self.status.count("translate_errors")
            log.exception("reading the mesh failed; proxies keep revision %d",
                          self.index.revision)
            return
        self.index = index
        self.last_change_at = changed_at if changed_at is not None else time.monotonic()
        self.status.count("mesh_revisions")
        # Decided here, synchronously and from memoised versions, so that a proxy the
        # change does not touch is not even woken.
        for stream in self._streams:
            if stream.affected():
                stream.mesh_changed(self.last_change_at)

    # --- grpc plumbing -----------------------------------------------------------------
    def _handlers(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for service, (method, type_url) in _SERVICES.items():
            handlers[f"/{service}/{method}"] = grpc.stream_stream_rpc_method_handler(
                self._handler(type_url),
                request_deserializer=_parse_request,
                response_serializer=_serialize_response,
            )
        return _ByPath(handlers)

    def _handler(self, fixed_type: str):
        async def handle(requests, context) -> None:
            stream = Stream(self, context, fixed_type=fixed_type)
            self._streams.add(stream)
            try:
                await stream.run(requests)
            finally:
                self._streams.discard(stream)

        return handle


class _ByPath(grpc.GenericRpcHandler):
    def __init__(self, handlers: dict) -> None:
        self._handlers = handlers

    def service(self, handler_call_details):
        return self._handlers.get(handler_call_details.method)
