"""A raw-socket HTTP/1.1 client for tests that must control every byte.

Why: pipelining, hostile framing, half-sent heads and upgrades cannot be expressed with
curl or httpx; a test writes the bytes itself and reads exactly what comes back.

How: `Conn` wraps a blocking socket with a deadline on every read. Responses are parsed by
the standard library's `http.client` (not Plait's codec, so a codec bug cannot hide
itself) from one buffered reader, so pipelined responses are read one after another.
`closed()` waits, with a deadline, for the peer to close; nothing here sleeps.
"""

from __future__ import annotations

import http.client
import select
import socket
import struct
import time
from dataclasses import dataclass


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    version: int  # 10 or 11
    trailers_seen: bool = False

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


class _Unclosable:
    """The shared reader as http.client sees it: it closes its file after each response."""

    def __init__(self, file) -> None:
        self._file = file

    def __getattr__(self, name):
        return getattr(self._file, name)

    def close(self) -> None:
        pass


class Conn:
    """One TCP connection to (host, port). Use as a context manager."""

    def __init__(self, address: tuple[str, int], *, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.file = self.sock.makefile("rb")

    def makefile(self, *args, **kwargs):  # http.client reads through the shared buffer
        return _Unclosable(self.file)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str = "GET", target: str = "/", *, host: str = "h",
                headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.send("\r\n".join(lines).encode() + b"\r\n\r\n" + body)

    def reply(self, *, method: str = "GET", timeout: float | None = None) -> Reply:
        """Read one whole response (a HEAD response has no body)."""
        self.sock.settimeout(timeout or self.timeout)
        resp = http.client.HTTPResponse(self, method=method)
        resp.begin()
        body = resp.read()
        headers: dict[str, str] = {}
        for name, value in resp.getheaders():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return Reply(resp.status, headers, body, resp.version)

    def reply_head(self, *, timeout: float | None = None) -> Reply:
        """Read only a response head (a 101, after which the bytes are a tunnel's)."""
        self.sock.settimeout(timeout or self.timeout)
        version, status, _ = self.file.readline().decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            line = self.file.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return Reply(int(status), headers, b"", 11 if version == "HTTP/1.1" else 10)

    def read_exactly(self, n: int, *, timeout: float | None = None) -> bytes:
        """`n` raw bytes (tunnels); fewer only if the peer closes first."""
        self.sock.settimeout(timeout or self.timeout)
        return self.file.read(n)

    def read_until_close(self, *, timeout: float | None = None) -> bytes:
        self.sock.settimeout(timeout or self.timeout)
        return self.file.read()

    def closed(self, *, timeout: float | None = None) -> bool:
        """True once the peer closes (EOF or reset) within `timeout`; False if it is
        still open then. Bytes that arrive meanwhile are discarded."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # select, not a socket timeout: a timed-out socket file refuses all later reads
            readable, _, _ = select.select([self.sock], [], [], remaining)
            if not readable:
                return False
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True

    def abort(self) -> None:
        """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        try:
            self.file.close()
        finally:
            self.sock.close()

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
