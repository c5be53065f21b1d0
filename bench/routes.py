"""What a realistic route table costs Plait's sidecar, against a single catch-all route.

Two sidecar configurations route every request to the same nginx upstream:
- catchall: one virtual host `*` with one route, prefix "/" → app;
- table50: one virtual host `*` with 50 routes, all on prefix "/" and each with header
  conditions of the kinds a mesh generates (exact, prefix, regex and string matches on
  tenant, version, user-agent and cookie headers, `:method`, an inverted presence check),
  spread over five shapes. The first 49 never match wrk's `GET /` and point at a decoy
  cluster with no live endpoint, so a wrong match shows up as errors; the 50th, the one
  that matches, is last: every request walks the whole table (the worst case for a
  first-match router).

Each is measured at saturation with wrk (one thread, --connections keep-alive connections,
--duration seconds, after --warmup seconds), the proxy alone on one CPU, nginx and wrk on
the other. Rounds are interleaved and each configuration reported by its median round.
Beside the load test, the router's own matching cost is timed in this process: the same
compiled route table, `Router.route()` on a request head like wrk's, best of five timings
of 20,000 calls, which a busy machine disturbs far less than a saturation run. The last
line printed is the summary other tools read:

    routes: table50_vs_catchall_rps=<ratio>

Method and recorded numbers: docs/performance.md ("Route table cost").
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import timeit
from pathlib import Path

from rich.console import Console
from rich.table import Table

from plait.codec.http1 import Request
from plait.dataplane.bootstrap import parse_bootstrap
from plait.dataplane.router import Router
from plait.demo.bootstrap import single_cluster

from _harness import (LoadResult, Procs, cpu_plan, free_port, load_average, median_result, run_wrk,
                      stop_on_signals)
from _peers import Server, require_tools, start_nginx
from _plait import start_sidecar

SCENARIOS = ("catchall", "table50")
TABLE_SIZE = 50


def _decoy_conditions(i: int) -> list[dict]:
    """Header conditions of route i (< 49), none of which wrk's requests satisfy."""
    shape = i % 5
    if shape == 0:
        return [{"name": "x-tenant", "exact_match": f"tenant-{i:02d}"}]
    if shape == 1:
        return [{"name": "x-version", "prefix_match": f"v{i}."},
                {"name": ":method", "exact_match": "GET"}]
    if shape == 2:
        return [{"name": "user-agent", "safe_regex_match": {"regex": f"canary-{i}/[0-9.]+"}}]
    if shape == 3:
        return [{"name": "cookie", "string_match": {"contains": f"group=g{i}",
                                                    "ignore_case": True}}]
    return [{"name": "x-debug", "present_match": True, "invert_match": True},
            {"name": "x-region", "string_match": {"suffix": f"-zone-{i}"}}]


def route_config(scenario: str) -> dict:
    routes = []
    if scenario == "table50":
        routes = [{"name": f"decoy-{i}", "match": {"prefix": "/", "headers": _decoy_conditions(i)},
                   "route": {"cluster": "decoy"}} for i in range(TABLE_SIZE - 1)]
        last = {"prefix": "/", "headers": [{"name": ":method", "exact_match": "GET"}]}
    else:
        last = {"prefix": "/"}
    routes.append({"name": "app", "match": last, "route": {"cluster": "app"}})
    return {"name": "local", "virtual_hosts": [{"name": "all", "domains": ["*"],
                                                "routes": routes}]}


def bootstrap(scenario: str, upstream: Server, decoy_port: int) -> dict:
    config = single_cluster(node="bench", listen_port=free_port(), admin_port=free_port(),
                            upstream_port=upstream.port, route_config=route_config(scenario))
    clusters = config["static_resources"]["clusters"]
    decoy = {**clusters[0], "name": "decoy"}
    decoy["load_assignment"] = {"cluster_name": "decoy", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": decoy_port}}}}]}]}
    clusters.append(decoy)
    return config


def match_cost_us(scenario: str) -> float:
    """Microseconds per `Router.route()` of wrk's `GET /` through the compiled table."""
    config = bootstrap(scenario, Server(None, "127.0.0.1", 1), 2)
    table = parse_bootstrap(json.dumps(config)).snapshot.listeners[0].route_table
    router = Router(table)
    head = Request(b"GET", b"/", False, [(b"host", b"127.0.0.1:8080")], b"127.0.0.1:8080",
                   True, False, -1, None, False)
    assert router.route(head).route.name == "app"
    calls = 20_000
    return min(timeit.repeat(lambda: router.route(head), number=calls, repeat=5)) / calls * 1e6


def check_routed(target: Server) -> None:
    """One request must reach the upstream through the last route before we measure."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=5)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        reply.read()
    finally:
        conn.close()
    if reply.status != 200:
        raise RuntimeError(f"a request through the route table got {reply.status}, not 200")


def measure(scenario: str, procs: Procs, workdir: Path, upstream: Server, decoy_port: int,
            args, proxy_cpus, load_cpus) -> LoadResult:
    target = start_sidecar(procs, workdir, upstream, cpus=proxy_cpus,
                           config=bootstrap(scenario, upstream, decoy_port))
    try:
        check_routed(target)
        if args.warmup:
            run_wrk(procs, target.url, connections=args.connections, seconds=args.warmup,
                    cpus=load_cpus)
        return run_wrk(procs, target.url, connections=args.connections,
                       seconds=args.duration, cpus=load_cpus)
    finally:
        procs.stop(target.proc)


def _us(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:.0f} µs"


def report(rows: dict[str, LoadResult], costs: dict[str, float], args,
           console: Console) -> str:
    table = Table(title=f"Route table cost: {args.connections} connections at saturation, "
                        f"{args.duration} s, median of {args.rounds} round(s)")
    for col in ("config", "routes walked", "req/s", "p50", "p99", "errors", "match µs"):
        table.add_column(col, justify="left" if col == "config" else "right")
    for name, r in rows.items():
        walked = str(TABLE_SIZE) if name == "table50" else "1"
        table.add_row(name, walked, f"{r.rps:,.0f}", _us(r.p50_us), _us(r.p99_us),
                      str(r.errors), f"{costs[name]:.2f}")
    console.print(table)
    base, big = rows.get("catchall"), rows.get("table50")
    ratio = "n/a" if not base or not big or base.rps <= 0 else f"{big.rps / base.rps:.2f}"
    return f"routes: table50_vs_catchall_rps={ratio}"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk before measuring")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (1..9)")
    args = ap.parse_args(argv)
    if not 1 <= args.rounds <= 9:
        ap.error("--rounds must be 1..9")
    if not 1 <= args.duration <= 300 or not 0 <= args.warmup <= 60:
        ap.error("--duration must be 1..300 seconds and --warmup 0..60")
    return args



def main(argv=None) -> int:
    args = parse_args(argv)
    require_tools("nginx", "wrk")
    stop_on_signals()
    console = Console(width=None if sys.stdout.isatty() else 120)
    proxy_cpus, load_cpus = cpu_plan()
    if proxy_cpus == load_cpus:
        console.print("[yellow]one CPU only: proxy and load share it; numbers say little[/]")
    load_before = load_average()
    runs: dict[str, list[LoadResult]] = {}
    with tempfile.TemporaryDirectory(prefix="plait-bench-routes-") as tmp:
        procs = Procs(Path(tmp))
        decoy_port = free_port()  # nothing listens there: a decoy match would be an error
        try:
            upstream = start_nginx(procs, Path(tmp), cpus=load_cpus)
            for round_no in range(1, args.rounds + 1):
                for scenario in SCENARIOS:
                    console.print(f"[bold]{scenario}[/]: measuring (round {round_no}/{args.rounds}) …")
                    runs.setdefault(scenario, []).append(measure(
                        scenario, procs, Path(tmp), upstream, decoy_port, args, proxy_cpus,
                        load_cpus))
        except KeyboardInterrupt:
            console.print("interrupted; stopping everything")
            return 130
        except RuntimeError as exc:
            console.print(f"[red]benchmark failed:[/] {exc}")
            return 1
        finally:
            procs.stop_all()
    costs = {name: match_cost_us(name) for name in SCENARIOS}
    summary = report({name: median_result(rs) for name, rs in runs.items()}, costs, args,
                     console)
    console.print(f"load average {load_before:.2f} before, {load_average():.2f} after")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
