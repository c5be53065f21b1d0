"""The demo service: answers every request with JSON naming itself, after a short random delay.

It stands in for a real application behind a sidecar, so the demo has something whose
version and latency the mesh can show. asyncio Protocol and httptools keep it cheap enough
that the sidecar, not the app, dominates a profile. Requests on one connection are answered
in order (pipelining safe). `--error-rate` makes a fraction of answers 500s, for demos of
retries, outlier detection and canary roll-back.

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
        if self.transport.is_closing():
            return
        failed = random.random() < self.args.error_rate
        status = b"500 Internal Server Error" if failed else b"200 OK"
        body = json.dumps({
            "service": self.args.name, "version": self.args.version,
            "path": url.decode(errors="replace"), "delay_ms": round(delay * 1000, 2),
        }).encode() + b"\n"
        head = (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n"
                b"x-demo-version: " + self.args.version.encode() + b"\r\n")
        if not keep_alive:
            head += b"connection: close\r\n"
        self.transport.write(head + b"\r\n" + body)
        if keep_alive:
            self._next()
        else:
            self.transport.close()


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
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
    args = ap.parse_args(argv)
    if not 0 <= args.min_delay_ms <= args.max_delay_ms or not 0 <= args.error_rate <= 1:
        ap.error("need 0 <= min-delay <= max-delay and 0 <= error-rate <= 1")
    return args


def main(argv=None) -> int:
    uvloop.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
