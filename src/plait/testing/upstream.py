"""A real upstream HTTP/1.1 server whose behaviour each request chooses by its path.

Why: proxy tests need an upstream that misbehaves on demand (closes mid-body, never
answers, is slow, upgrades, speaks HTTP/1.0) and reports what it saw, and it must be a
separate process on a real socket so the sidecar meets it exactly as it would in the field.

How: asyncio on uvloop, parsing with httptools directly (not Plait's own codec, so a codec
bug cannot hide itself). Requests on a connection are answered in order by one task per
connection. Run `python -m plait.testing.upstream --port 0 --name NAME`; it prints
`upstream ready port=N` once listening. Every response carries `x-upstream-name`.

Paths (any method; HEAD gets the same head without a body):
  /echo...                 JSON: method, path, version, headers, body_length, body_sha256,
                           trailers, name
  /status/<code>           that status, body "status <code>"
  /delay/<ms>[/...]        wait, then behave as the rest of the path (default /echo)
  /chunked/<n>             n chunks, then a trailer `x-checksum` (the body's sha256)
  /large/<bytes>           a body of that many bytes (content-length)
  /close-mid-body          content-length 1000, 10 bytes, then close
  /close-before-response   close without answering
  /ws                      101 for `Upgrade: websocket`, then echo raw bytes
  /http10                  an HTTP/1.0 response delimited by close
  /overlong                content-length 5 followed by more bytes than that
  /count                   JSON: requests served (not counting /count and /admin/...),
                           connections, and requests by Host header (`authorities`)
  /admin/fail?status=<n>[&every=<k>]
                           from now on answer every request (but /count and /admin/...)
                           with status n instead, or with every=k one request in k (the
                           first, then every k-th); status=0 stops failing
  /admin/delay?ms=<n>      from now on wait n ms before answering every such request;
                           ms=0 stops
  /flaky/<key>/<n>/<rest>  the first n requests under key behave as /<rest>; later ones
                           as /echo (retry tests: `/flaky/a/1/status/503`)
  /interim/<code>/<rest>   an interim (1xx) response first, then as /<rest>
  /ignore-upgrade          answer an upgrade request as /echo and read what follows it as
                           more HTTP requests, as a server without WebSocket support does
Anything else is echoed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys

import httptools
import uvloop

_PHRASES = {101: b"Switching Protocols", 200: b"OK", 400: b"Bad Request", 404: b"Not Found"}


class _Request:
    __slots__ = ("method", "path", "version", "headers", "trailers", "body_length", "sha",
                 "keep_alive", "upgrade_rest", "in_body")

    def __init__(self) -> None:
        self.method = ""
        self.path = b""
        self.version = ""
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.body_length = 0
        self.sha = hashlib.sha256()
        self.keep_alive = True
        self.upgrade_rest: bytes | None = None
        self.in_body = False

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


class Server:
    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0
        self.connections = 0
        self.flaky: dict[str, int] = {}
        self.authorities: dict[str, int] = {}
        self.fail_status = 0  # set by /admin/fail: answer everything with this status
        self.fail_every = 1  # ... or one request in this many
        self.fail_seen = 0  # requests met since failing began
        self.delay_ms = 0  # set by /admin/delay: wait this long before every answer
        self.tasks: set[asyncio.Task] = set()


class _Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.current: _Request | None = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.transport = None
        self.tunnel = False
        self.task: asyncio.Task | None = None

    # -- transport ------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections += 1
        self.task = asyncio.get_running_loop().create_task(self.serve())
        self.server.tasks.add(self.task)
        self.task.add_done_callback(self.server.tasks.discard)

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            self.transport.write(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            request = self.current
            if request is not None:
                request.upgrade_rest = data[exc.args[0]:]
                self.transport.pause_reading()
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                                 b"connection: close\r\n\r\n")
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.queue.put_nowait(None)

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = _Request()

    def on_url(self, url: bytes) -> None:
        self.current.path += url

    def on_header(self, name: bytes, value: bytes) -> None:
        pair = (name.decode("latin-1").lower(), value.decode("latin-1"))
        req = self.current
        (req.trailers if req.in_body else req.headers).append(pair)

    def on_headers_complete(self) -> None:
        req = self.current
        req.in_body = True
        req.method = self.parser.get_method().decode()
        req.version = self.parser.get_http_version()
        req.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.current.body_length += len(body)
        self.current.sha.update(body)

    def on_message_complete(self) -> None:
        self.queue.put_nowait(self.current)

    # -- answering ------------------------------------------------------------------------

    async def serve(self) -> None:
        while True:
            req = await self.queue.get()
            if req is None or self.transport.is_closing():
                return
            path = req.path.split(b"?", 1)[0].decode("latin-1")
            if path != "/count" and not path.startswith("/admin/"):
                self.server.requests += 1
                host = req.header("host") or ""
                self.server.authorities[host] = self.server.authorities.get(host, 0) + 1
            try:
                if path.startswith("/admin/"):
                    keep = self.admin(req, path)
                else:
                    keep = await self.respond(req, path)
            except (ConnectionError, ValueError) as exc:
                self.send(req, 400, str(exc).encode(), keep_alive=False)
                keep = False
            if self.tunnel:
                return  # raw bytes from now on, echoed by data_received
            if not keep or not req.keep_alive or req.upgrade_rest is not None:
                self.transport.close()
                return

    def send(self, req: _Request, status: int, body: bytes, *, keep_alive: bool = True,
             headers: list[tuple[bytes, bytes]] = (), ctype: bytes = b"text/plain") -> None:
        lines = [b"HTTP/1.1 %d %s" % (status, _PHRASES.get(status, b"Status")),
                 b"x-upstream-name: " + self.server.name.encode()]
        if status not in (204, 304) and status >= 200:
            lines += [b"content-type: " + ctype, b"content-length: %d" % len(body)]
        lines += [b"%s: %s" % h for h in headers]
        if not (keep_alive and req.keep_alive):
            lines.append(b"connection: close")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        no_body = req.method == "HEAD" or status in (204, 304) or status < 200
        self.transport.write(head if no_body else head + body)

    def admin(self, req: _Request, path: str) -> bool:
        """Switch the whole server's behaviour: /admin/fail?status=N, /admin/delay?ms=N."""
        query = dict(pair.partition("=")[::2] for pair in
                     req.path.decode("latin-1").partition("?")[2].split("&") if pair)
        server = self.server
        if path == "/admin/fail":
            server.fail_status = int(query.get("status", "0"))
            server.fail_every = max(1, int(query.get("every", "1")))
            server.fail_seen = 0
        elif path == "/admin/delay":
            server.delay_ms = int(query.get("ms", "0"))
        else:
            self.send(req, 404, b"unknown admin path\n")
            return True
        self.send(req, 200, json.dumps({"fail_status": server.fail_status,
                                        "fail_every": server.fail_every,
                                        "delay_ms": server.delay_ms}).encode(),
                  ctype=b"application/json")
        return True

    async def respond(self, req: _Request, path: str) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        server = self.server
        if path != "/count":
            if server.delay_ms:
                await asyncio.sleep(server.delay_ms / 1000.0)
            if server.fail_status:
                server.fail_seen += 1
                if server.fail_seen % server.fail_every == 1 % server.fail_every:
                    code = server.fail_status
                    self.send(req, code, b"failing with %d\n" % code)
                    return True
        parts = path.strip("/").split("/")
        while parts and parts[0] in ("delay", "flaky", "interim"):
            if parts[0] == "delay":
                await asyncio.sleep(int(parts[1]) / 1000.0)
                parts = parts[2:]
            elif parts[0] == "interim":
                self.transport.write(b"HTTP/1.1 %s Interim\r\nx-interim: yes\r\n\r\n"
                                     % parts[1].encode())
                parts = parts[2:]
            else:
                key, n = parts[1], int(parts[2])
                seen = self.server.flaky.get(key, 0)
                self.server.flaky[key] = seen + 1
                parts = parts[3:] if seen < n else ["echo"]
        kind = parts[0] if parts else ""
        if kind == "status":
            code = int(parts[1])
            self.send(req, code, b"status %d\n" % code)
        elif kind == "chunked":
            self.send_chunked(req, int(parts[1]))
        elif kind == "large":
            size = int(parts[1])
            self.send(req, 200, bytes(i % 251 for i in range(251)) * (size // 251)
                      + bytes(range(size % 251)), ctype=b"application/octet-stream")
        elif kind == "close-mid-body":
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"
                                 + b"x" * 10)
            return False
        elif kind == "close-before-response":
            return False
        elif kind == "ws":
            return self.upgrade(req)
        elif kind == "ignore-upgrade" and req.upgrade_rest is not None:
            self.send(req, 200, b"no upgrade here\n")
            rest, req.upgrade_rest = req.upgrade_rest, None
            self.parser = httptools.HttpRequestParser(self)
            self.transport.resume_reading()
            self.data_received(rest)
        elif kind == "overlong":
            # More bytes than the framing says, shaped like the start of another response.
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
                                 b"HTTP/1.1 299 Injected\r\ncontent-length: 20\r\n\r\nabc")
        elif kind == "http10":
            self.transport.write(b"HTTP/1.0 200 OK\r\nx-upstream-name: %s\r\n\r\n"
                                 b"close-delimited body" % self.server.name.encode())
            return False
        elif kind == "count":
            body = json.dumps({"name": self.server.name, "requests": self.server.requests,
                               "connections": self.server.connections,
                               "authorities": self.server.authorities}).encode()
            self.send(req, 200, body, ctype=b"application/json")
        else:
            body = json.dumps({
                "name": self.server.name, "method": req.method,
                "path": req.path.decode("latin-1"), "version": req.version,
                "headers": req.headers, "trailers": req.trailers,
                "body_length": req.body_length, "body_sha256": req.sha.hexdigest(),
            }).encode()
            self.send(req, 200, body, ctype=b"application/json")
        return True

    def send_chunked(self, req: _Request, n: int) -> None:
        out = [b"HTTP/1.1 200 OK\r\nx-upstream-name: %s\r\ntransfer-encoding: chunked\r\n"
               b"trailer: x-checksum\r\n\r\n" % self.server.name.encode()]
        sha = hashlib.sha256()
        for i in range(n):
            chunk = b"chunk %d\n" % i
            sha.update(chunk)
            out.append(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        out.append(b"0\r\nx-checksum: %s\r\n\r\n" % sha.hexdigest().encode())
        self.transport.write(out[0] if req.method == "HEAD" else b"".join(out))

    def upgrade(self, req: _Request) -> bool:
        if (req.header("upgrade") or "").lower() != "websocket":
            self.send(req, 400, b"expected Upgrade: websocket\n", keep_alive=False)
            return False
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                             b"connection: upgrade\r\nx-upstream-name: %s\r\n\r\n"
                             % self.server.name.encode())
        self.tunnel = True
        if req.upgrade_rest:
            self.transport.write(req.upgrade_rest)
        self.transport.resume_reading()
        return True


async def serve(*, host: str, port: int, name: str) -> None:
    loop = asyncio.get_running_loop()
    state = Server(name)
    server = await loop.create_server(lambda: _Connection(state), host, port, backlog=1024)
    print(f"upstream ready port={server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m plait.testing.upstream")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--name", default="upstream")
    args = p.parse_args(argv)
    try:
        uvloop.run(serve(host=args.host, port=args.port, name=args.name))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
