"""Instructions per request on the sidecar's request path, counted rather than timed.

A saturation run on a shared VM moves by tens of percent from one minute to the next;
an instruction count does not. This benchmark runs the request path of a real worker
in this process (the real listener manager, codec, router, filters, exchange, pool,
flusher and stats, with recording transports instead of sockets) under valgrind's
callgrind, and counts the instructions the whole process executes (user space: Python,
llhttp, uvloop; not the kernel). Each configuration is run twice, with --short and
--long requests, and the difference is divided by the difference in requests, so
start-up and shut-down drop out. The configurations are bench/governance.py's: `none`
(one route, no filters) and `governance` (rate limit, circuit breaker, retries, outlier
detection, circuit-breaker thresholds, health checks). The request is wrk's
(`GET /`, a Host header); the response nginx's (five headers, a 26-byte body).

The loop is never given a turn: the flusher is run by hand after each read, as the loop
would at the end of its turn, so timers (health checks, the deadlines ticker) stay out
of the count. `--bytecodes` instead traces the same path in this process and prints
bytecodes per request by function (no valgrind needed).

    python bench/instructions.py [--short 500 --long 5500] [--bytecodes]

Last line: `instructions: none=<n> governance=<n> governance_cost_pct=<x>`.
Method and recorded numbers: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from governance import bootstrap

from _peers import Server

SCENARIOS = ("none", "governance")
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
            b"Date: Mon, 23 Nov 2026 08:00:00 GMT\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 26\r\nConnection: keep-alive\r\n\r\nhello from nginx upstream\n")
WARMUP = 50  # requests before counting, in --bytecodes (the interpreter specialises)


class Recorder:
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default=None):
        return default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


async def request_path(scenario: str):
    """A started worker with one client connection and one pooled upstream connection;
    returns a function that sends one request through and answers it."""
    from plait.dataplane.bootstrap import parse_bootstrap
    from plait.dataplane.upstream.connection import UpstreamConnection
    from plait.dataplane.worker import Worker

    # The upstream is never dialled: the pool already holds a connection to it.
    config = bootstrap(scenario, Server(None, "127.0.0.1", 9))
    snapshot = parse_bootstrap(json.dumps(config)).snapshot
    worker = Worker(snapshot, access_log=None)
    worker.loop = asyncio.get_running_loop()
    await worker.apply(snapshot, {})
    down = worker.managers["outbound"].protocol()
    client = Recorder()
    down.connection_made(client)
    host = worker.clusters.get("app").hosts[0]
    up = UpstreamConnection(host)
    server = Recorder()
    up.connection_made(server)
    host.idle.append(up)
    flush = worker.flusher.run

    def one() -> None:
        down.data_received(REQUEST)
        flush()
        up.data_received(RESPONSE)
        flush()

    one()
    if not (server.written and server.written[-1].startswith(b"GET / HTTP/1.1\r\n")
            and client.written and client.written[-1].endswith(b"nginx upstream\n")):
        raise RuntimeError(f"{scenario}: the request did not go through")
    return one


def drive(scenario: str, requests: int) -> None:
    async def main() -> None:
        one = await request_path(scenario)
        for _ in range(requests):
            one()
    asyncio.run(main())


def counted(scenario: str, requests: int) -> int:
    """Instructions callgrind counts for a whole run of `requests` requests."""
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, str(Path(__file__)), "--drive", scenario, str(requests)]
    # One hash seed for every run: the same dict and set layouts, the same count.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1))


def bytecodes(scenario: str, requests: int = 200) -> None:
    """Bytecodes per request by function, traced on the same path."""
    counts: Counter[str] = Counter()

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{code.co_filename.rsplit('/src/', 1)[-1]}:{code.co_name}"] += 1
        return tracer

    async def main() -> None:
        one = await request_path(scenario)
        for _ in range(WARMUP):
            one()
        sys.settrace(tracer)
        for _ in range(requests):
            one()
        sys.settrace(None)

    asyncio.run(main())
    del counts[f"{Path(__file__).name}:one"]  # the driver itself
    for key in [k for k in counts if k.endswith(":tracer")]:
        del counts[key]
    print(f"{scenario}: {sum(counts.values()) / requests:,.0f} bytecodes per request")
    for name, n in counts.most_common(25):
        print(f"  {n / requests:7.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=int, default=500, help="requests in the short run")
    parser.add_argument("--long", type=int, default=5500, help="requests in the long run")
    parser.add_argument("--bytecodes", action="store_true",
                        help="trace bytecodes per function instead (no valgrind)")
    parser.add_argument("--drive", nargs=2, metavar=("SCENARIO", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive(args.drive[0], int(args.drive[1]))
        return
    if args.bytecodes:
        for scenario in SCENARIOS:
            bytecodes(scenario)
        return
    if shutil.which("valgrind") is None:
        sys.exit("instructions: valgrind is needed (Debian package valgrind; `make bench` "
                 "installs it)")
    if args.long <= args.short:
        sys.exit("instructions: --long must be more than --short")
    per_request = {}
    for scenario in SCENARIOS:
        short, long = counted(scenario, args.short), counted(scenario, args.long)
        per_request[scenario] = (long - short) / (args.long - args.short)
        print(f"{scenario}: {per_request[scenario]:,.0f} instructions per request "
              f"({short:,} for {args.short}, {long:,} for {args.long})", flush=True)
    none, governance = per_request["none"], per_request["governance"]
    print(f"instructions: none={none:.0f} governance={governance:.0f} "
          f"governance_cost_pct={(governance / none - 1) * 100:.1f}")


if __name__ == "__main__":
    main()
