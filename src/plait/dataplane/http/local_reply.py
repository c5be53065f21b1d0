"""The one edge where an internal `Reason` becomes an HTTP response.

Every response the sidecar makes itself carries `x-plait-error: <reason>` and a one-line
text body naming the reason, so no failure is anonymous.
"""

from __future__ import annotations

from http import HTTPStatus

from plait.core.errors import HTTP_STATUS, Reason

ERROR_HEADER = b"x-plait-error"


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def local_response(reason: Reason, *, keep_alive: bool, http10: bool = False,
                   head_only: bool = False, status: int = 0) -> tuple[int, bytes]:
    """(status, wire bytes) of the sidecar's own answer for `reason`; `status` overrides
    the reason's usual status."""
    status = status or HTTP_STATUS[reason]
    body = reason.value.encode() + b"\n"
    conn = b""
    if not keep_alive:
        conn = b"connection: close\r\n"
    elif http10:
        conn = b"connection: keep-alive\r\n"
    head = (b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            b"%s: %s\r\n%s\r\n" % (status, _phrase(status), len(body), ERROR_HEADER,
                                   reason.value.encode(), conn))
    return status, head if head_only else head + body


def direct_response(status: int, body: bytes, *, keep_alive: bool, http10: bool = False,
                    head_only: bool = False, headers: list = ()) -> bytes:
    """A configured answer: a route's `direct_response` or redirect."""
    conn = b"" if keep_alive and not http10 else (
        b"connection: keep-alive\r\n" if keep_alive else b"connection: close\r\n")
    extra = b"".join(b"%s: %s\r\n" % h for h in headers)
    head = (b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n%s%s\r\n"
            % (status, _phrase(status), len(body), extra, conn))
    return head if head_only else head + body
