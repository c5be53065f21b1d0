"""A bare ADS client for tests and benchmarks: speak xDS v3 by hand, request by request.

Real clients (Envoy, gRPC) decide themselves when to ACK; tests need to choose — ACK this,
NACK that, send a stale nonce, request an unknown type — and benchmarks need a thousand
cheap clients. `AdsClient` writes exactly the DiscoveryRequests it is told to, and
remembers per type the last names it asked for, so an ACK repeats the subscription as
real clients do.
"""

from __future__ import annotations

import asyncio

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
Request = discovery_pb2.DiscoveryRequest
Response = discovery_pb2.DiscoveryResponse


def make_node(node_id: str, **metadata) -> base_pb2.Node:
    node = base_pb2.Node(id=node_id)
    if metadata:
        node.metadata.update(metadata)
    return node


class AdsClient:
    """One ADS stream on `channel`. The node goes out with the first request only."""

    def __init__(self, channel: grpc.aio.Channel, node: base_pb2.Node) -> None:
        self._call = channel.stream_stream(
            ADS_METHOD,
            request_serializer=Request.SerializeToString,
            response_deserializer=Response.FromString,
        )()
        self._node: base_pb2.Node | None = node
        self.names: dict[str, list[str]] = {}

    async def send(self, type_url: str, names: list[str] | None = None, *, version: str = "",
                   nonce: str = "", error: str | None = None) -> None:
        """Write one request; `names` None repeats the last subscription for the type."""
        if names is None:
            names = self.names.get(type_url, [])
        self.names[type_url] = list(names)
        request = Request(type_url=type_url, resource_names=names, version_info=version,
                          response_nonce=nonce)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        if self._node is not None:
            request.node.CopyFrom(self._node)
            self._node = None
        await self._call.write(request)

    async def subscribe(self, type_url: str, names: list[str] | None = None) -> Response:
        """Open a subscription (no nonce) and return the first answer."""
        await self.send(type_url, names or [])
        return await self.recv()

    async def recv(self, timeout: float | None = 5.0) -> Response:
        """The next response (None: wait without limit); raises TimeoutError, or
        grpc.aio.AioRpcError if the server ended the stream."""
        read = self._call.read()
        response = await (read if timeout is None else asyncio.wait_for(read, timeout))
        if response is grpc.aio.EOF:
            await self._call  # raises the stream's final status
            raise EOFError("the server closed the stream")
        return response

    async def ack(self, response: Response, names: list[str] | None = None) -> None:
        await self.send(response.type_url, names, version=response.version_info,
                        nonce=response.nonce)

    async def nack(self, response: Response, error: str, *, good_version: str = "") -> None:
        # A NACK carries the last version the client accepted, not the rejected one.
        await self.send(response.type_url, None, version=good_version, nonce=response.nonce,
                        error=error)

    async def status(self) -> grpc.StatusCode:
        """Wait for the stream to end; its status code."""
        return await self._call.code()

    def close(self) -> None:
        self._call.cancel()
