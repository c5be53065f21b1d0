"""A minimal HTTP/1.1 client for the sidecar's own calls (registry leases).

The sidecar does not carry a general HTTP client library (memory is part of its budget);
these few JSON calls to the control plane reuse the project's codec. One request per
connection, a deadline on the whole exchange.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

from plait.codec.http1 import Data, EndOfMessage, Http1ClientCodec, Response
from plait.core.errors import ProtocolError


class ClientError(Exception):
    """The call could not be made or its answer was not HTTP."""


async def request_json(method: str, url: str, body: dict | None = None, *,
                       timeout: float = 5.0) -> tuple[int, dict]:
    """Send one request; return (status, decoded JSON body or {})."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ClientError(f"unsupported URL {url!r}")
    port = parts.port or 80
    payload = json.dumps(body).encode() if body is not None else b""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (f"{method} {target} HTTP/1.1\r\nhost: {parts.hostname}:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
            f"connection: close\r\n\r\n").encode()
    try:
        return await asyncio.wait_for(_exchange(parts.hostname, port, head + payload), timeout)
    except (OSError, asyncio.TimeoutError, ProtocolError) as exc:
        raise ClientError(f"{method} {url}: {exc or type(exc).__name__}") from None


async def _exchange(host: str, port: int, wire: bytes) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(wire)
        codec = Http1ClientCodec()
        status, chunks = 0, []
        while True:
            data = await reader.read(65536)
            events = codec.receive_data(data) if data else codec.receive_eof()
            for ev in events:
                if type(ev) is Response:
                    status = ev.status
                elif type(ev) is Data:
                    chunks.append(ev.data)
                elif type(ev) is EndOfMessage:
                    body = b"".join(chunks)
                    try:
                        return status, json.loads(body) if body else {}
                    except ValueError:
                        return status, {}
            if not data:
                raise ProtocolError("connection closed before a response")
    finally:
        writer.close()
