"""The admin endpoint (127.0.0.1:15000 by default), Envoy's paths where Envoy has them.

GET  /ready               200 "LIVE" once every listener serves; 503 while draining
GET  /stats/prometheus    counters and histograms of all workers, summed
GET  /stats               the same as JSON
GET  /config_dump         the config in force (source document and version)
GET  /clusters            endpoints, health and per-host counters (?format=json)
POST /drain               stop accepting, finish in-flight requests, exit
POST /quitquitquit        exit now

It is not on the request path, so it favours plainness: one task per admin request, one
request per connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Awaitable, Callable

from plait.codec.http1 import EndOfMessage, Http1ServerCodec, Request
from plait.core.errors import ProtocolError
from plait.dataplane.stats import render_prometheus


class AdminHandlers:
    """What the admin endpoint needs from the sidecar process."""

    def __init__(self, *, stats: Callable[[], Awaitable[dict]], config: Callable[[], dict],
                 clusters: Callable[[dict], list], drain: Callable[[], None],
                 quit: Callable[[], None]) -> None:
        self.stats = stats  # merged snapshot of all workers
        self.config = config
        self.clusters = clusters  # merged snapshot -> list of cluster dicts
        self.drain = drain
        self.quit = quit
        self.ready = False
        self.draining = False


class _AdminConnection(asyncio.Protocol):
    def __init__(self, handlers: AdminHandlers, tasks: set) -> None:
        self.h = handlers
        self.tasks = tasks
        self.codec = Http1ServerCodec()
        self.transport = None
        self.request: Request | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            events = self.codec.receive_data(data)
        except ProtocolError:
            self._reply(400, b"bad request\n")
            return
        for ev in events:
            if type(ev) is Request and self.request is None:
                self.request = ev
            elif type(ev) is EndOfMessage and self.request is not None:
                task = asyncio.get_running_loop().create_task(self._handle(self.request))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                self.transport.pause_reading()
                return

    async def _handle(self, req: Request) -> None:
        path, _, query = req.target.decode("latin-1").partition("?")
        method = req.method
        h = self.h
        try:
            if path == "/ready":
                ok = h.ready and not h.draining
                self._reply(200 if ok else 503, b"LIVE\n" if ok else b"NOT READY\n")
            elif path == "/stats/prometheus":
                text = render_prometheus(await h.stats())
                self._reply(200, text.encode(), b"text/plain; version=0.0.4")
            elif path == "/stats":
                merged = await h.stats()
                out = {kind: [{"name": n, "labels": dict(lab), "value": v}
                              for (n, lab), v in sorted(merged[kind].items())]
                       for kind in ("counters", "gauges")}
                self._json(out)
            elif path == "/config_dump":
                self._json(h.config())
            elif path == "/clusters":
                clusters = h.clusters(await h.stats())
                if "format=json" in query:
                    self._json({"clusters": clusters})
                else:
                    lines = [f"{c['name']}::{e['address']}::{k}::{e[k]}"
                             for c in clusters for e in c["endpoints"]
                             for k in ("health", "rq_total", "cx_active")]
                    self._reply(200, ("\n".join(lines) + "\n").encode())
            elif path in ("/drain", "/quitquitquit"):
                if method != b"POST":
                    self._reply(405, b"use POST\n")
                    return
                self._reply(200, b"OK\n")
                (h.drain if path == "/drain" else h.quit)()
            else:
                self._reply(404, b"not found\n")
        except Exception as exc:  # an admin bug must not take the sidecar down
            self._reply(500, f"admin error: {exc}\n".encode())

    def _json(self, obj) -> None:
        self._reply(200, json.dumps(obj, indent=2, default=str).encode() + b"\n",
                    b"application/json")

    def _reply(self, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, ctype, len(body), body))
        self.transport.close()


async def start_admin(handlers: AdminHandlers, host: str, port: int) -> asyncio.AbstractServer:
    tasks: set = set()
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _AdminConnection(handlers, tasks), host, port)
