"""A minimal HTTP/1.1 client for the sidecar's own calls to its control plane (registry
leases, events, certificates).

The sidecar does not carry a general HTTP client library (memory is part of its budget);
these few calls reuse the project's codec. One request per connection, a deadline on the
whole exchange; https with the workload identity's TLS settings when it has one.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

from plait.codec.http1 import Data, EndOfMessage, Http1ClientCodec, Response
from plait.core.errors import ProtocolError


class ClientError(Exception):
    """The call could not be made or its answer was not HTTP."""


async def request(method: str, url: str, body: bytes = b"", *,
                  content_type: str = "application/json", auth=None,
                  timeout: float = 5.0) -> tuple[int, bytes]:
    """Send one request; return (status, body bytes).

    `auth` (optional) supplies the caller's credentials: `auth.ssl_context()` for https
    (None is refused there) and `auth.headers()`, e.g. a bearer token. Neither is ever
    part of an error message.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"unsupported URL {url!r}")
    tls = None
    if parts.scheme == "https":
        tls = auth.ssl_context() if auth is not None else None
        if tls is None:
            raise ClientError(f"{method} {url}: no TLS settings for an https URL")
    port = parts.port or (443 if tls is not None else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    extra = "".join(f"{name}: {value}\r\n" for name, value in auth.headers()) if auth else ""
    head = (f"{method} {target} HTTP/1.1\r\nhost: {parts.hostname}:{port}\r\n"
            f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n{extra}"
            f"connection: close\r\n\r\n").encode()
    try:
        return await asyncio.wait_for(_exchange(parts.hostname, port, head + body, tls),
                                      timeout)
    except (OSError, asyncio.TimeoutError, ProtocolError) as exc:
        raise ClientError(f"{method} {url}: {exc or type(exc).__name__}") from None


async def request_json(method: str, url: str, body: dict | None = None, *,
                       timeout: float = 5.0, auth=None) -> tuple[int, dict]:
    """Send one JSON request; return (status, decoded JSON body or {})."""
    payload = json.dumps(body).encode() if body is not None else b""
    status, raw = await request(method, url, payload, auth=auth, timeout=timeout)
    try:
        decoded = json.loads(raw) if raw else {}
    except ValueError:
        decoded = {}
    return status, decoded if isinstance(decoded, dict) else {}


async def _exchange(host: str, port: int, wire: bytes, tls) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
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
                    return status, b"".join(chunks)
            if not data:
                raise ProtocolError("connection closed before a response")
    finally:
        writer.close()
