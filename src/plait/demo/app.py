"""The demo service: answers every request with JSON naming itself, after a short random delay.

It stands in for a real application behind a sidecar, so the demo has something whose
version and latency the mesh can show. asyncio Protocol and httptools keep it cheap enough
that the sidecar, not the app, dominates a profile. Requests on one connection are answered
in order (pipelining safe). `--error-rate` makes a fraction of answers 500s, for demos of
retries, outlier detection and canary roll-back.

With `--call SERVICE --via HOST:PORT` it first calls SERVICE through its own sidecar's
outbound listener (`Host: SERVICE`), the way a meshed app calls another, and answers with
the chain of services and versions that served the request in `x-demo-chain`
(e.g. `frontend/v1>catalog/v2>pricing/v1`); a failed call makes its answer a 502.

    python -m plait.demo.app --port 0 --name reviews --version v2

Prints `plait demo app ready name=N version=V port=P` once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
from collections import deque

import httptools
import uvloop

from plait.demo.traffic import ClientConnection, RequestFailed

READY_PREFIX = "plait demo app ready"


class AppProtocol(asyncio.Protocol):
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.pending: deque[tuple[bytes, bool]] = deque()
        self.busy = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.pending.append((self.url, self.parser.should_keep_alive()))
        self.url = b""
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.pending or self.transport.is_closing():
            self.busy = False
            return
        self.busy = True
        delay = random.uniform(self.args.min_delay_ms, self.args.max_delay_ms) / 1000
        asyncio.get_running_loop().call_later(delay, self._respond, delay, *self.pending.popleft())

    def _respond(self, delay: float, url: bytes, keep_alive: bool) -> None:
        if self.args.call:
            task = asyncio.get_running_loop().create_task(self._call_then_respond(delay, url, keep_alive))
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)
            return
        self._write(delay, url, keep_alive, b"", failed=random.random() < self.args.error_rate)

    async def _call_then_respond(self, delay: float, url: bytes, keep_alive: bool) -> None:
        chain, ok = await self.args.downstream.call(self.args.call, url)
        failed = not ok or random.random() < self.args.error_rate
        self._write(delay, url, keep_alive, chain, failed=failed, bad_gateway=not ok)

    def _write(self, delay: float, url: bytes, keep_alive: bool, chain: bytes, *,
               failed: bool, bad_gateway: bool = False) -> None:
        if self.transport.is_closing():
            return
        me = f"{self.args.name}/{self.args.version}".encode()
        chain = me + (b">" + chain if chain else b"")
        status = (b"502 Bad Gateway" if bad_gateway else
                  b"500 Internal Server Error" if failed else b"200 OK")
        body = json.dumps({
            "service": self.args.name, "version": self.args.version,
            "path": url.decode(errors="replace"), "delay_ms": round(delay * 1000, 2),
        }).encode() + b"\n"
        head = (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n"
                b"x-demo-version: " + self.args.version.encode() + b"\r\n"
                b"x-demo-chain: " + chain + b"\r\n")
        if not keep_alive:
            head += b"connection: close\r\n"
        self.transport.write(head + b"\r\n" + body)
        if keep_alive:
            self._next()
        else:
            self.transport.close()


_TASKS: set = set()  # calls in flight, owned here so none is garbage-collected mid-way


class Downstream:
    """Keep-alive connections to the app's own sidecar, one request per connection at a
    time; answers with the callee's `x-demo-chain` and whether it succeeded."""

    def __init__(self, via: str) -> None:
        host, _, port = via.rpartition(":")
        self.host, self.port = host, int(port)
        self.idle: list = []

    async def call(self, service: str, url: bytes) -> tuple[bytes, bool]:
        conn = None
        while self.idle and conn is None:
            candidate = self.idle.pop()
            conn = None if candidate.closed else candidate
        try:
            if conn is None:
                _, conn = await asyncio.get_running_loop().create_connection(
                    ClientConnection, self.host, self.port)
            raw = b"GET %s HTTP/1.1\r\nhost: %s\r\n\r\n" % (url, service.encode())
            status, _, keep_alive = await conn.request(raw, 2.0)
        except (OSError, RequestFailed, TimeoutError):
            if conn is not None and conn.transport is not None:
                conn.transport.close()
            return service.encode() + b"/unreachable", False
        if keep_alive and not conn.closed:
            self.idle.append(conn)
        chain = (conn.tag or f"{service}/?").encode()
        return chain, 200 <= status < 300


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    args.downstream = Downstream(args.via) if args.call else None
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(lambda: AppProtocol(args), args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"{READY_PREFIX} name={args.name} version={args.version} port={port}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m plait.demo.app", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed when ready)")
    ap.add_argument("--name", default="demo-app")
    ap.add_argument("--version", default="v1")
    ap.add_argument("--min-delay-ms", type=float, default=1.0)
    ap.add_argument("--max-delay-ms", type=float, default=4.0)
    ap.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered 500")
    ap.add_argument("--call", default="", help="a service to call for each request")
    ap.add_argument("--via", default="", help="HOST:PORT of this app's sidecar outbound listener")
    args = ap.parse_args(argv)
    if bool(args.call) != bool(args.via):
        ap.error("--call and --via go together")
    if not 0 <= args.min_delay_ms <= args.max_delay_ms or not 0 <= args.error_rate <= 1:
        ap.error("need 0 <= min-delay <= max-delay and 0 <= error-rate <= 1")
    return args


def main(argv=None) -> int:
    uvloop.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
