"""One xDS stream (state of the world): subscriptions, versions, nonces, ACK and NACK.

The rules, per type URL:

* A request without a nonce opens (or re-opens) a subscription: always answer it, even
  with nothing, because Envoy and gRPC wait for that first answer.
* A request whose nonce is the last one sent is an ACK — or a NACK when `error_detail` is
  set. A NACK records the error and leaves the proxy on its last good version; the same
  content is not sent again until the mesh changes, so a bad config never loops.
* A request with an older nonce is stale for ACK purposes, but its resource names still
  count: gRPC changes subscriptions with stale nonces (the interop notes), so names are
  compared on every request and a changed subscription is answered at once.
* Listener and Cluster subscriptions are wildcard when the first request names nothing
  (or names "*"): that is the Plait sidecar / Envoy. Named Listener subscriptions are
  proxyless gRPC targets, and such a stream sees only what its targets need. Routes and
  endpoints are always named.

A mesh change is pushed only for types whose content hash changed; the version string
is that hash, so an unchanged proxy is never disturbed. Work for one stream is serialised
through one queue consumed by one task, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import TYPE_CHECKING

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from plait.controlplane.push.naming import INBOUND, OUTBOUND
from plait.controlplane.push.proxy import ProxyInfo
from plait.controlplane.push.status import Nack, ProxyRecord, TypeStatus
from plait.controlplane.push.translate import PUSH_ORDER, WILDCARD_TYPES, Resource, universe
from plait.core.errors import ConfigError
from plait.xds.resources import LISTENER

if TYPE_CHECKING:
    from plait.controlplane.push.ads import PushServer

log = logging.getLogger("plait.push")

MAX_QUEUED_REQUESTS = 64  # an honest client has at most one request per type in flight
CHANGED = object()  # queue marker: the mesh moved on
MALFORMED = object()  # what the deserializer hands over for bytes that are not a request
_FLOOD = object()
_END = object()


class Rejected(Exception):
    """The client broke the protocol; the stream ends with INVALID_ARGUMENT and this text."""


class Response:
    """A DiscoveryResponse as bytes: the shared body plus this stream's nonce.

    Protobuf merges concatenated encodings, so the body (resources, version, type) is
    serialised once per content and only the nonce field is encoded per send.
    """

    __slots__ = ("body", "nonce")

    def __init__(self, body: bytes, nonce: str) -> None:
        self.body, self.nonce = body, nonce

    def serialize(self) -> bytes:
        nonce = self.nonce.encode()
        # Field 5 (nonce), length-delimited; a nonce is a short decimal string (< 128 bytes).
        return b"".join((self.body, b"\x2a", bytes((len(nonce),)), nonce))


class Stream:
    def __init__(self, server: PushServer, context, *, fixed_type: str = "") -> None:
        self.server = server
        self.context = context
        self.fixed_type = fixed_type  # the per-type services carry no type URL
        self.proxy: ProxyInfo | None = None
        self._shape = -1  # the proxy's shape as a small int: a cheap memo key
        self._keys: dict[str, tuple] = {}  # type URL → its selection's memo key
        self.record: ProxyRecord = server.status.connect(context.peer())
        self.queue: asyncio.Queue = asyncio.Queue()
        self._change_pending = False
        self._change_at: float | None = None
        self._nonce = 0

    def affected(self) -> bool:
        """Whether the current index changes anything this stream was sent."""
        if self.proxy is None:
            return False
        for type_url, state in self.record.types.items():
            try:
                if self._selection(type_url)[1] != state.version_sent:
                    return True
            except Exception:  # let _push report it, with the stream's context
                return True
        return False

    def mesh_changed(self, changed_at: float) -> None:
        """Called by the server after a rebuild; coalesces into one queued marker."""
        if self._change_at is None or changed_at < self._change_at:
            self._change_at = changed_at
        if not self._change_pending:
            self._change_pending = True
            self.queue.put_nowait(CHANGED)

    async def run(self, requests) -> None:
        rejected: Rejected | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                reader = tasks.create_task(self._read(requests))
                try:
                    await self._serve()
                except Rejected as exc:
                    rejected = exc
                reader.cancel()
        finally:
            self.server.status.disconnect(self.record)
        if rejected is not None:
            # Outside the task group: grpc must see its own abort exception, unwrapped.
            await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(rejected))

    async def _read(self, requests) -> None:
        try:
            async for request in requests:
                if self.queue.qsize() >= MAX_QUEUED_REQUESTS:
                    self.queue.put_nowait(_FLOOD)
                    return
                self.queue.put_nowait(request)
        except (grpc.RpcError, asyncio.InvalidStateError) as exc:
            log.debug("stream %s: read ended: %s", self.record.stream_id, exc)
        self.queue.put_nowait(_END)

    async def _serve(self) -> None:
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            if item is CHANGED:
                self._change_pending = False
                changed_at, self._change_at = self._change_at, None
                if self.proxy is not None:
                    for type_url in PUSH_ORDER:
                        if type_url in self.record.types:
                            await self._push(type_url, changed_at=changed_at)
                continue
            if item is _FLOOD:
                self._reject("too many requests queued on one stream")
            await self._on_request(item)

    def _reject(self, message: str) -> None:
        self.server.status.count("malformed_requests")
        log.warning("stream %s (%s): %s", self.record.stream_id,
                    self.record.node_id or self.record.peer, message)
        raise Rejected(message)

    async def _on_request(self, request) -> None:
        status = self.server.status
        status.count("requests")
        if request is MALFORMED:
            self._reject("request is not a DiscoveryRequest")
        type_url = self.fixed_type or request.type_url
        if not type_url:
            self._reject("type_url is required on an ADS stream")
        if self.proxy is None:
            self._identify(request)
            if self.proxy is None:
                self._reject(self._node_error)
        if type_url not in PUSH_ORDER:
            status.count("unknown_type_requests")
            if not request.response_nonce:  # answer once, with nothing; ignore its ACKs
                await self._send_raw(type_url, "", [])
            return
        state = self.record.type_status(type_url)
        first = not request.response_nonce
        if not first:
            self._settle(state, request)
        if self._subscribe(state, request.resource_names, first=first) or first:
            await self._push(type_url, force=True)

    _node_error = ""

    def _identify(self, request) -> None:
        try:
            self.proxy = ProxyInfo.from_node(request.node)
        except ConfigError as exc:
            self._node_error = f"bad node metadata: {exc}"
            return
        self._shape = self.server.shape_id(self.proxy.shape)
        self.record.node_id = self.proxy.node_id
        self.record.app = self.proxy.app

    def _settle(self, state: TypeStatus, request) -> None:
        """Book an ACK or a NACK for the response the request answers."""
        status = self.server.status
        if request.response_nonce != state.nonce:
            status.count("stale_requests")
            return
        now = time.monotonic()
        if request.HasField("error_detail"):
            status.count("nacks")
            state.last_nack = Nack(state.version_sent, request.error_detail.message, time.time())
            log.warning("proxy %s NACKed %s version %s: %s", self.record.node_id,
                        type_url_short(state.type_url), state.version_sent,
                        request.error_detail.message)
            return
        status.count("acks")
        state.version_acked = state.version_sent
        state.acked_at, state.acked_wall = now, time.time()
        if state.sent_at is not None:
            state.push_latency_ms = round((now - state.sent_at) * 1000, 3)
        if state.change_at is not None:
            state.change_to_ack_ms = round((now - state.change_at) * 1000, 3)

    def _subscribe(self, state: TypeStatus, names, *, first: bool) -> bool:
        """Apply the request's resource names; True when the subscription changed."""
        names = frozenset(names)
        wildcard = state.type_url in WILDCARD_TYPES and (
            "*" in names or (not names and (first or state.wildcard)))
        names = names - {"*"}
        if (wildcard, names) == (state.wildcard, state.names) and not first:
            return False
        state.wildcard, state.names = wildcard, names
        self._keys.clear()  # a Listener subscription changes every type's key
        if state.type_url == LISTENER:
            proxyless = bool(names - {OUTBOUND, INBOUND})
            self.record.mode = "sidecar" if wildcard else "proxyless" if proxyless else "unknown"
        return True

    def _selection(self, type_url: str) -> tuple[list[Resource], str]:
        """The resources of `type_url` this stream is subscribed to, and their version.

        Memoised on the index by everything it depends on, so the thousand streams of a
        push share the work: a stream whose content did not change costs a dict lookup.
        """
        key = self._keys.get(type_url)
        if key is None:
            key = self._keys[type_url] = self._selection_key(type_url)
        return self.server.index.memo(key, lambda: self._select(key))

    def _selection_key(self, type_url: str) -> tuple:
        listeners = self.record.types.get(LISTENER)
        names = listeners.names if listeners is not None else frozenset()
        # Only a proxyless client (Listeners by target name) is kept away from the
        # sidecar's resources; a stream that never asked for Listeners (Envoy with one
        # stream per type) may look them up by name.
        proxyless = listeners is not None and not listeners.wildcard and bool(
            names - {OUTBOUND, INBOUND})
        state = self.record.types[type_url]
        return ("selection", self._shape, proxyless, names, type_url, state.wildcard,
                state.names)

    def _select(self, key: tuple) -> tuple[list[Resource], str]:
        _, _, proxyless, listener_names, type_url, wildcard, names = key
        by_name = universe(self.server.index, self.proxy, wildcard=not proxyless,
                           listener_names=listener_names)[type_url]
        if wildcard:
            chosen = [by_name[n] for n in sorted(by_name)]
        else:
            chosen = [by_name[n] for n in sorted(names) if n in by_name]
        return chosen, _version(chosen)

    async def _push(self, type_url: str, *, force: bool = False,
                    changed_at: float | None = None) -> None:
        state = self.record.types[type_url]
        try:
            selection, version = self._selection(type_url)
        except Exception:  # a translator bug must not take the stream (or the server) down
            self.server.status.count("translate_errors")
            log.exception("translating %s for %s failed", type_url, self.record.node_id)
            return
        if version == state.version_sent and not force:
            return
        await self._send_raw(type_url, version, selection, state=state,
                             changed_at=changed_at)

    async def _send_raw(self, type_url: str, version: str, selection: list[Resource], *,
                        state: TypeStatus | None = None,
                        changed_at: float | None = None) -> None:
        body = self.server.index.memo(("response", type_url, version), lambda: (
            discovery_pb2.DiscoveryResponse(
                version_info=version, type_url=type_url,
                resources=[r.packed for r in selection],
                control_plane={"identifier": "plait"},
            ).SerializeToString()))
        self._nonce += 1
        nonce = str(self._nonce)
        if state is not None:
            # Booked before the write, which may take a while under load: a rebuild in
            # the meantime must compare with what is on its way, or a change reverted
            # to this content would look like no change and never be sent.
            state.nonce, state.version_sent = nonce, version
            state.resources_sent = len(selection)
            state.sent_at, state.sent_wall = time.monotonic(), time.time()
            state.change_at = changed_at if changed_at is not None else state.sent_at
        self.server.status.count("pushes")  # counted as sent, like the state above
        await self.context.write(Response(body, nonce))


def _version(selection: list[Resource]) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for resource in selection:
        digest.update(resource.name.encode())
        digest.update(resource.digest)
    return digest.hexdigest()


def type_url_short(type_url: str) -> str:
    return type_url.rpartition(".")[2]
