"""Paced demo traffic and what the client saw.

`Traffic.run` sends requests at a fixed rate (open loop: request i is due at
start + i/rate, whatever earlier requests are doing) over keep-alive HTTP/1.1
connections, until a deadline or until cancelled. In-flight requests are
capped, so a stalled sidecar cannot make the demo pile up tasks; a request that would
exceed the cap is counted as an error (`client_overload`) rather than sent.

`ClientStats` records each outcome: totals, counts by status (an exception's class name
when there was no response), the sidecar's `x-plait-error` reason when it answered
itself, and latencies, recent ones for the live view and all of them (bounded) for the
final summary.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field

import httptools

MAX_SAMPLES = 2_000_000  # about 16 MB of doubles; later samples still count, untimed


def percentile(sorted_values, p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(1, math.ceil(p / 100 * len(sorted_values))) - 1]


@dataclass
class ClientStats:
    window_s: float = 5.0
    requests: int = 0
    ok: int = 0
    errors: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_reason: Counter = field(default_factory=Counter)
    recent: deque = field(default_factory=deque)  # (finished_at, latency_s)
    samples: array = field(default_factory=lambda: array("d"))
    started: float = field(default_factory=time.monotonic)
    by_tag: Counter = field(default_factory=Counter)  # e.g. which versions answered
    recent_tags: deque = field(default_factory=deque)  # (finished_at, tag)

    def record(self, *, status: int | str, latency_s: float, reason: str | None = None,
               tag: str | None = None) -> None:
        now = time.monotonic()
        self.requests += 1
        if tag:
            self.by_tag[tag] += 1
            self.recent_tags.append((now, tag))
        if isinstance(status, int) and 200 <= status < 300:
            self.ok += 1
        else:
            self.errors += 1
        self.by_status[str(status)] += 1
        if reason:
            self.by_reason[reason] += 1
        self.recent.append((now, latency_s))
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(latency_s)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.recent and self.recent[0][0] < now - self.window_s:
            self.recent.popleft()
        while self.recent_tags and self.recent_tags[0][0] < now - self.window_s:
            self.recent_tags.popleft()

    def recent_tag_shares(self) -> dict[str, float]:
        """Each tag's share of the tagged answers in the recent window."""
        self._trim(time.monotonic())
        counts = Counter(tag for _, tag in self.recent_tags)
        total = sum(counts.values())
        return {tag: n / total for tag, n in counts.items()} if total else {}

    def rate(self, over_s: float = 2.0) -> float:
        """Completed requests per second over the last `over_s` seconds."""
        now = time.monotonic()
        self._trim(now)
        span = min(over_s, now - self.started)
        if span <= 0:
            return 0.0
        return sum(1 for t, _ in self.recent if t >= now - over_s) / span

    def recent_percentiles(self, *ps: float) -> list[float]:
        """Latency percentiles (seconds) over the recent window."""
        self._trim(time.monotonic())
        values = sorted(lat for _, lat in self.recent)
        return [percentile(values, p) for p in ps]

    def overall_percentiles(self, *ps: float) -> list[float]:
        values = sorted(self.samples)
        return [percentile(values, p) for p in ps]


class ClientConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection; one request at a time."""

    tag_header = b"x-demo-chain"  # a response header whose value tags the answer

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.reason: str | None = None
        self.tag: str | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"x-plait-error":
            self.reason = value.decode(errors="replace")
        elif name == self.tag_header:
            self.tag = value.decode(errors="replace")

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), self.reason,
                                    self.parser.should_keep_alive()))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail("protocol_error")
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._fail("connection_reset")

    def _fail(self, what: str) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(RequestFailed(what))

    async def request(self, raw: bytes, timeout_s: float) -> tuple[int, str | None, bool]:
        self.reason = None
        self.tag = None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await asyncio.wait_for(self.waiter, timeout_s)


class RequestFailed(Exception):
    """A request got no complete response; the message is the error's name."""


class Traffic:
    """Sends GET requests for `paths` (in turn) to host:port at `rate` per second.

    Plain asyncio and httptools rather than a full HTTP client: a demo client that costs
    milliseconds of CPU per request would show its own latency, not the sidecar's."""

    def __init__(self, host: str, port: int, *, rate: float, paths: tuple[str, ...] = ("/",),
                 headers: dict[str, str] | None = None, timeout_s: float = 2.0,
                 max_in_flight: int = 200):
        if not 0 < rate <= 5000:
            raise ValueError("rate must be in (0, 5000] requests per second")
        self.host, self.port = host, port
        self.rate = rate
        headers = dict(headers or {})
        if not any(k.lower() == "host" for k in headers):
            headers["Host"] = f"{host}:{port}"
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.requests = [(f"GET {p} HTTP/1.1\r\n{extra}User-Agent: plait-demo\r\n\r\n").encode()
                         for p in paths]
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.idle: list[ClientConnection] = []

    async def run(self, stats: ClientStats, *, duration_s: float | None = None) -> None:
        """Sends until `duration_s` elapses (forever if None), then waits for the requests
        already sent. If cancelled, requests in flight are abandoned uncounted."""
        stats.started = time.monotonic()
        try:
            async with asyncio.TaskGroup() as tasks:
                start = time.monotonic()
                sent = 0
                limit = math.ceil(duration_s * self.rate) if duration_s is not None else None
                while limit is None or sent < limit:
                    due = int((time.monotonic() - start) * self.rate) + 1
                    due = due if limit is None else min(due, limit)
                    while sent < due:
                        self._send(tasks, stats, self.requests[sent % len(self.requests)])
                        sent += 1
                    await asyncio.sleep(max(0.0, start + sent / self.rate - time.monotonic()))
        finally:
            for conn in self.idle:
                conn.transport.close()
            self.idle.clear()

    def _send(self, tasks: asyncio.TaskGroup, stats: ClientStats, raw: bytes) -> None:
        if self.in_flight >= self.max_in_flight:
            stats.record(status="client_overload", latency_s=0.0)
            return
        self.in_flight += 1
        tasks.create_task(self._one(stats, raw))

    async def _one(self, stats: ClientStats, raw: bytes) -> None:
        t0 = time.perf_counter()
        conn = None
        try:
            while self.idle and conn is None:
                candidate = self.idle.pop()
                if not candidate.closed:  # the server may close an idle connection
                    conn = candidate
            conn = conn or await self._connect()
            status, reason, keep_alive = await conn.request(raw, self.timeout_s)
            stats.record(status=status, latency_s=time.perf_counter() - t0, reason=reason,
                         tag=conn.tag)
            if keep_alive and not conn.closed:
                self.idle.append(conn)
                conn = None
        except (OSError, RequestFailed, TimeoutError) as exc:
            name = {TimeoutError: "timeout", ConnectionRefusedError: "connect_refused"}.get(
                type(exc), str(exc) if isinstance(exc, RequestFailed) else type(exc).__name__)
            stats.record(status=name, latency_s=time.perf_counter() - t0)
        finally:
            self.in_flight -= 1
            if conn is not None and conn.transport is not None:
                conn.transport.close()

    async def _connect(self) -> ClientConnection:
        _, conn = await asyncio.get_running_loop().create_connection(ClientConnection, self.host, self.port)
        return conn
