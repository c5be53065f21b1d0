"""Open-loop HTTP/1.1 load at a fixed rate, timing every request.

wrk drives a proxy to saturation but has no rate option, and a closed loop (send, wait,
send) lets a slow server slow the load down. This generator sends request i at
start + i/rate whatever happened to earlier ones, over a pool of keep-alive connections
(idle ones are reused first-in first-out, so all of them carry traffic), and times each
request from the write of its bytes to the last byte of its response (perf_counter_ns,
responses parsed by httptools). uvloop timers tick in milliseconds, so each wake-up sends
every request that has come due; how late each send was against its schedule is reported
apart from latency, as is any request that had to queue for a free connection, so a
generator that fell behind shows rather than hides in the numbers.

    python _paced.py --host 127.0.0.1 --port P --rate 1000 --duration 10 --warmup 1

With `--targets HOST:PORT,HOST:PORT,...` it loads each target in turn, `--slice` seconds
at a time (each with its own connections), until each has had `--duration` seconds: the
targets are measured under the same conditions of the machine, seconds apart instead of
a whole run apart.

Prints one line: PACED_JSON {...} (latencies in microseconds); with --targets,
{"targets": [{...}, ...]} in the order given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import deque

import httptools
import uvloop

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: plait-paced\r\n\r\n"


class Conn(asyncio.Protocol):
    def __init__(self, gen: "Generator"):
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.busy = False
        self.record = False
        self.t0 = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, record: bool) -> None:
        self.busy, self.record = True, record
        self.t0 = time.perf_counter_ns()
        self.transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        elapsed = time.perf_counter_ns() - self.t0
        self.busy = False
        self.gen.done(self, elapsed, self.parser.get_status_code())

    def connection_lost(self, exc) -> None:
        self.gen.lost(self)


class Generator:
    def __init__(self, host: str, port: int, *, max_pool: int):
        self.host, self.port = host, port
        self.max_pool = max_pool
        self.idle: deque[Conn] = deque()
        self.conns: set[Conn] = set()
        self.opening = 0
        self.backlog: deque[bool] = deque()
        self.outstanding = 0
        self.drained = asyncio.Event()
        self.latencies: list[int] = []
        self.lags: list[float] = []
        self.errors = self.bad_status = self.queued = 0

    async def open_one(self) -> None:
        self.opening += 1
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                lambda: Conn(self), self.host, self.port)
        except OSError:
            self.opening -= 1
            self.errors += len(self.backlog)
            self.outstanding -= len(self.backlog)
            self.backlog.clear()
            self._check_drained()
            return
        self.opening -= 1
        self.conns.add(conn)
        self._next(conn)

    def dispatch(self, record: bool) -> None:
        self.outstanding += 1
        self.drained.clear()
        if self.idle:
            self.idle.popleft().send(record)
            return
        self.backlog.append(record)
        self.queued += record
        if len(self.conns) + self.opening < self.max_pool:
            asyncio.ensure_future(self.open_one())

    def _next(self, conn: Conn) -> None:
        if self.backlog:
            conn.send(self.backlog.popleft())
        else:
            self.idle.append(conn)

    def done(self, conn: Conn, elapsed_ns: int, status: int) -> None:
        self.outstanding -= 1
        if conn.record:
            self.latencies.append(elapsed_ns)
            self.bad_status += status != 200
        self._next(conn)
        self._check_drained()

    def lost(self, conn: Conn) -> None:
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.busy:
            conn.busy = False
            self.outstanding -= 1
            self.errors += conn.record
        self._check_drained()

    def _check_drained(self) -> None:
        if self.outstanding <= 0:
            self.drained.set()

    async def run(self, rate: int, seconds: float, *, record: bool) -> float:
        """Sends rate*seconds requests on schedule, waits for the answers; returns seconds taken."""
        total = int(rate * seconds)
        start = time.perf_counter()
        sent = 0
        while sent < total:
            now = time.perf_counter()
            due = min(total, int((now - start) * rate) + 1)
            while sent < due:
                if record:
                    self.lags.append(now - (start + sent / rate))
                self.dispatch(record)
                sent += 1
            await asyncio.sleep(start + sent / rate - time.perf_counter())
        try:
            await asyncio.wait_for(self.drained.wait(), timeout=10)
        except TimeoutError:
            self.errors += self.outstanding if record else 0
        return time.perf_counter() - start


def percentile(sorted_values: list, p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def in_turns(gens: list[Generator], rate: int, seconds: float, slice_s: float, *,
                   record: bool) -> list[float]:
    """Each generator in turn for `slice_s` seconds (its requests answered before the
    next starts), until each has had `seconds`; returns the seconds each took."""
    taken = [0.0] * len(gens)
    done = 0.0
    while done < seconds - 1e-9:
        step = min(slice_s, seconds - done)
        for k, gen in enumerate(gens):
            taken[k] += await gen.run(rate, step, record=record)
        done += step
    return taken


async def main_async(args) -> dict:
    targets = args.targets or [(args.host, args.port)]
    gens = [Generator(host, port, max_pool=args.max_connections) for host, port in targets]
    for gen in gens:
        await asyncio.gather(*(gen.open_one() for _ in range(args.connections)))
        if not gen.conns:
            raise SystemExit(f"cannot connect to {gen.host}:{gen.port}")
    if args.warmup > 0:
        await in_turns(gens, args.rate, args.warmup,
                       args.slice if args.targets else args.warmup, record=False)
    for gen in gens:
        gen.errors = 0
    taken = await in_turns(gens, args.rate, args.duration,
                           args.slice if args.targets else args.duration, record=True)
    results = [summary(gen, seconds, args) for gen, seconds in zip(gens, taken)]
    return {"targets": results} if args.targets else results[0]


def summary(gen: Generator, seconds: float, args) -> dict:
    for conn in list(gen.conns):
        conn.transport.close()
    lat = sorted(ns / 1000 for ns in gen.latencies)
    lags = sorted(s * 1e6 for s in gen.lags)
    return {
        "rate": args.rate, "sent": len(gen.lags), "completed": len(lat), "seconds": seconds,
        "errors": gen.errors + gen.bad_status, "bad_status": gen.bad_status,
        "queued": gen.queued, "connections": len(gen.conns) or args.connections,
        "p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
        "p999": percentile(lat, 99.9), "max": lat[-1] if lat else 0.0,
        "lag_p50": percentile(lags, 50), "lag_p99": percentile(lags, 99),
        "lag_max": lags[-1] if lags else 0.0,
    }


def _targets(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        out.append((host or "127.0.0.1", int(port)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--targets", type=_targets, help="HOST:PORT,... loaded in turns instead")
    ap.add_argument("--slice", type=float, default=0.5, help="seconds per turn (--targets)")
    ap.add_argument("--rate", type=int, default=1000, help="requests per second")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections opened up front")
    ap.add_argument("--max-connections", type=int, default=64)
    args = ap.parse_args()
    if (args.port is None) == (args.targets is None):
        ap.error("give --port or --targets")
    if args.slice <= 0:
        ap.error("--slice must be above 0")
    if args.rate * (args.duration + args.warmup) > 10_000_000:
        ap.error("refusing more than 10 million requests in one run")
    result = uvloop.run(main_async(args))
    print("PACED_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
