"""What the governance features cost Plait's sidecar when they are configured but quiet.

Two sidecar configurations route every request to the same nginx upstream:
- none: one route, prefix "/" → cluster app, no filters, no cluster options;
- governance: what an operator turns on for a service, set so that nothing trips under
  the offered load: a rate limit rule keyed by a request header (x-tenant; the load sends
  none, so every request shares the "no value" bucket) allowing 100,000 requests per
  second, far above what one worker serves; an errorRatio circuit breaker on the route;
  the retry policy Plait's control plane gives every route (Istio's default: two
  retries on connect-failure, refused-stream, unavailable, cancelled and 503; no per-try
  timeout unless --per-try-timeout); and on the cluster outlier detection,
  `circuit_breakers` thresholds (max_connections, max_pending_requests, max_requests,
  max_retries) with a retry budget, and an active HTTP health check every second.

Each is measured the way bench/http1.py measures Plait: `plait sidecar --concurrency 1
--access-log off` on one CPU, nginx and the load on the other; wrk (one thread,
--connections keep-alive connections) for --warmup then --duration seconds at
saturation; then --rate req/s from `_paced.py` for --duration seconds. Under both loads
the sidecar's own CPU time per request is read too (/proc, over the requests its stats
say it served), which a neighbour taking part of the CPU disturbs less than throughput.
A round starts a fresh sidecar of each configuration side by side on the proxy CPU and
loads them in turn (saturation for one, then the other; then the fixed rate likewise),
so the two measurements of a load are seconds apart; the idle one only runs its timers.
Which goes first alternates between rounds. Each configuration is reported by its median
round, and the cost of each round (its own pair) is printed too.
After each governance run the sidecar's stats must show that nothing tripped (no
refusal, rejection, ejection, overflow or retry) and that health checks ran; otherwise
the run fails, since it would no longer measure quiet governance.

Beside the load, the governance filters' own work per request (the rate limit and
breaker `on_request`, the breaker's `on_complete`) is timed in this process on the same
compiled config: best of five timings of 20,000 requests, which a busy machine disturbs
far less than a saturation run. The last line printed is the summary other tools read:

    governance: cost_pct=<median over rounds of (1 - governance/none req/s) × 100>
                rps_none=<median> rps_governance=<median>

Method and recorded numbers: docs/performance.md ("Governance filters").
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import timeit
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console
from rich.table import Table

from plait.codec.http1 import Request
from plait.controlplane.push.routes import DEFAULT_ATTEMPTS, DEFAULT_RETRY_ON
from plait.dataplane import filters
from plait.dataplane.bootstrap import parse_bootstrap
from plait.dataplane.filters import circuit_breaker, rate_limit
from plait.dataplane.http.exchange import Exchange
from plait.dataplane.router import Router
from plait.testing import sidecar as sc

from _harness import (Interference, LoadResult, Procs, cpu_plan, free_port, group_cpu_ticks,
                      load_average, median_result, run_paced, run_wrk, stop_on_signals)
from _peers import Server, require_tools, start_nginx
from _plait import start_sidecar

SCENARIOS = ("none", "governance")
TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"
RATE_LIMIT_PER_S = 100_000

# Counters that move when a governance feature acts; all must stay 0 in a quiet run.
TRIPS = ("plait_rate_limit_refused_total", "plait_circuit_breaker_opened_total",
         "plait_circuit_breaker_rejected_total", "plait_degrade_fallback_total",
         "plait_outlier_ejections_total", "plait_health_check_failure_total",
         "plait_health_check_ejections_total", "plait_upstream_cx_overflow_total",
         "plait_upstream_rq_pending_overflow_total", "plait_upstream_rq_retry_total",
         "plait_upstream_rq_retry_overflow_total",
         "plait_upstream_rq_retry_budget_exhausted_total", "plait_lb_healthy_panic_total")


def typed_struct(type_url: str, value: dict) -> dict:
    return {"@type": TYPED_STRUCT, "type_url": type_url, "value": value}


def rate_limit_filter() -> dict:
    """The listener's rate limit: one rule keyed by a header, far above the load."""
    return {"name": rate_limit.NAME, "typed_config": typed_struct(rate_limit.TYPE_URL, {
        "rules": [{"name": "per-tenant", "key": "header:x-tenant",
                   "tokensPerFill": RATE_LIMIT_PER_S, "fillIntervalMs": 1000,
                   "maxTokens": RATE_LIMIT_PER_S}]})}


def breaker_config() -> dict:
    """The route's circuit breaker: errorRatio over 10 s, as a Sentinel rule would be."""
    return {circuit_breaker.NAME: typed_struct(circuit_breaker.TYPE_URL, {
        "breakers": [{"name": "app-errors", "strategy": "errorRatio", "threshold": 0.5,
                      "minRequests": 20, "statWindowMs": 10000, "openDurationMs": 30000,
                      "halfOpenRequests": 3}]})}


def app_cluster(scenario: str, upstream: Server) -> dict:
    if scenario == "none":
        return sc.cluster("app", [upstream.port])
    thresholds = sc.retry_budget(budget_percent=20.0, min_retry_concurrency=10)["thresholds"][0]
    thresholds.update(priority="DEFAULT", max_connections=100, max_pending_requests=100,
                      max_requests=200, max_retries=3)
    return sc.cluster(
        "app", [upstream.port],
        outlier_detection={**sc.outlier_detection(
            consecutive_5xx=5, consecutive_gateway_failure=5, base_ejection_time=30,
            max_ejection_time=300, max_ejection_percent=50), "interval": sc.duration(10)},
        circuit_breakers={"thresholds": [thresholds]},
        health_checks=[{"timeout": sc.duration(1), "interval": sc.duration(1),
                        "unhealthy_threshold": 3, "healthy_threshold": 2,
                        "http_health_check": {"path": "/healthz"}}])


def retry_policy(per_try_timeout: float | None) -> dict:
    """The retry policy the control plane puts on every route (Istio's default)."""
    return sc.retry_policy(DEFAULT_RETRY_ON, num_retries=DEFAULT_ATTEMPTS,
                           per_try_timeout=per_try_timeout, retriable_status_codes=[503])


def bootstrap(scenario: str, upstream: Server, *, per_try_timeout: float | None = None) -> dict:
    if scenario == "none":
        route = sc.route("app")
        http_filters = []
    else:
        route = sc.route("app", retry=retry_policy(per_try_timeout), per_filter=breaker_config())
        # The breaker's config is the route's; the listener only places it in the chain,
        # after the rate limit (so refused requests never count as a probe).
        http_filters = [rate_limit_filter(), {"name": circuit_breaker.NAME}]
    listener = sc.listener("outbound", [sc.virtual_host("all", ["*"], [route])],
                           port=free_port(), http_filters=http_filters)
    config = sc.bootstrap(listeners=[listener], clusters=[app_cluster(scenario, upstream)],
                          node="bench")
    config["admin"]["address"] = sc.address(free_port())
    return config


def filter_cost_us(scenario: str, args) -> float:
    """Microseconds per request of the governance filters (on_request, on_complete) on
    wrk's `GET /`, through the compiled config, outside any I/O. Each of the five timings
    gets a fresh chain, so its 20,000 requests never empty the rate limit's bucket."""
    config = bootstrap(scenario, Server(None, "127.0.0.1", 1),
                       per_try_timeout=args.per_try_timeout)
    listener = parse_bootstrap(json.dumps(config)).snapshot.listeners[0]
    if not filters.build_chain(listener.http_filters):
        return 0.0
    head = Request(b"GET", b"/", False, [(b"host", b"127.0.0.1:8080")], b"127.0.0.1:8080",
                   True, False, -1, None, False)
    ex = Exchange(SimpleNamespace(mgr=SimpleNamespace(access_log=None)), head)
    ex.route = Router(listener.route_table).route(head).route
    ex.code = 200
    calls, best = 20_000, float("inf")
    for _ in range(5):
        chain = filters.build_chain(listener.http_filters)
        completions = filters.completions(chain)

        def one_request() -> None:
            ex.filter_state = None
            for f in chain:
                if not f.on_request(ex):
                    raise RuntimeError("a governance filter refused a quiet request")
            for f in completions:
                f.on_complete(ex)

        one_request()
        best = min(best, timeit.timeit(one_request, number=calls))
    return best / calls * 1e6


def check_routed(target: Server) -> None:
    """One request must reach the upstream before we measure."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=5)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        reply.read()
    finally:
        conn.close()
    if reply.status != 200:
        raise RuntimeError(f"a request through the sidecar got {reply.status}, not 200")


def scrape(admin_port: int) -> sc.Metrics:
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    try:
        conn.request("GET", "/stats/prometheus")
        reply = conn.getresponse()
        body = reply.read()
    finally:
        conn.close()
    if reply.status != 200:
        raise RuntimeError(f"admin /stats/prometheus answered {reply.status}")
    return sc.Metrics(body.decode())


@dataclass
class Row:
    saturation: LoadResult
    paced: LoadResult
    cpu_sat_us: float  # the sidecar's CPU time per request at saturation
    cpu_us: float  # the sidecar's CPU time per request at the fixed rate
    other_load: float  # share of the proxy CPU used by processes not in the benchmark
    hc_attempts: int


@dataclass
class Subject:
    """A running sidecar of one configuration and what its measurements need."""

    scenario: str
    target: Server
    admin_port: int
    procs: Procs  # its own, so that each sidecar keeps its own log


def start_subject(scenario: str, workdir: Path, upstream: Server, args, proxy_cpus) -> Subject:
    config = bootstrap(scenario, upstream, per_try_timeout=args.per_try_timeout)
    workdir.mkdir(exist_ok=True)
    procs = Procs(workdir)
    target = start_sidecar(procs, workdir, upstream, cpus=proxy_cpus, config=config)
    subject = Subject(scenario, target, config["admin"]["address"]["socket_address"]
                      ["port_value"], procs)
    check_routed(target)
    return subject


def served(subject: Subject) -> float:
    return scrape(subject.admin_port).value("plait_downstream_rq_total")


def measure_round(order: tuple[str, ...], procs: Procs, workdir: Path, upstream: Server,
                  args, proxy_cpus, load_cpus) -> dict[str, Row]:
    """One round: a fresh sidecar of each configuration, both on the proxy CPU, loaded in
    turn (saturation for each, then the fixed rate for each), so that the two
    measurements of a load are seconds apart. Only the one under load does any work."""
    subjects: list[Subject] = []
    try:
        for scenario in order:
            subjects.append(start_subject(scenario, workdir / scenario, upstream, args,
                                          proxy_cpus))
        for s in subjects:
            if args.warmup:
                run_wrk(procs, s.target.url, connections=args.connections,
                        seconds=args.warmup, cpus=load_cpus)
        saturation, paced, cpu_sat, cpu_paced, other = {}, {}, {}, {}, {}
        for s in subjects:
            interference = Interference(min(proxy_cpus), s.target.proc)
            interference.start()
            served0, ticks0 = served(s), group_cpu_ticks(s.target.proc)
            saturation[s.scenario] = run_wrk(procs, s.target.url, connections=args.connections,
                                             seconds=args.duration, cpus=load_cpus)
            ticks1 = group_cpu_ticks(s.target.proc)
            cpu_sat[s.scenario] = _per_request_us(ticks1 - ticks0, served(s) - served0)
            other[s.scenario] = interference.share()
        for s in subjects:
            interference = Interference(min(proxy_cpus), s.target.proc)
            interference.start()
            served0, ticks0 = served(s), group_cpu_ticks(s.target.proc)
            paced[s.scenario] = run_paced(procs, s.target.host, s.target.port, rate=args.rate,
                                          seconds=args.duration, cpus=load_cpus)
            ticks1 = group_cpu_ticks(s.target.proc)
            cpu_paced[s.scenario] = _per_request_us(ticks1 - ticks0, served(s) - served0)
            other[s.scenario] = max(other[s.scenario], interference.share())
        stats = {s.scenario: scrape(s.admin_port) for s in subjects}
    finally:
        for s in subjects:
            s.procs.stop_all()
    rows = {}
    for scenario in order:
        tripped = {name: stats[scenario].value(name) for name in TRIPS
                   if stats[scenario].value(name)}
        if tripped:
            raise RuntimeError(f"{scenario}: governance acted during the run: {tripped}")
        hc = int(stats[scenario].value("plait_health_check_attempt_total"))
        if scenario == "governance" and hc == 0:
            raise RuntimeError("governance: no health check ran during the run")
        rows[scenario] = Row(saturation[scenario], paced[scenario], cpu_sat[scenario],
                             cpu_paced[scenario], other[scenario], hc)
    return rows


def _per_request_us(ticks: int, requests: float) -> float:
    return ticks / os.sysconf("SC_CLK_TCK") * 1e6 / requests if requests else 0.0


def combine(rows: list[Row]) -> Row:
    """One row from several rounds: medians of the measurements, the worst other load."""
    def med(attr: str) -> float:
        values = sorted(getattr(r, attr) for r in rows)
        return values[len(values) // 2]

    return Row(median_result([r.saturation for r in rows]),
               median_result([r.paced for r in rows]), med("cpu_sat_us"), med("cpu_us"),
               max(r.other_load for r in rows), max(r.hc_attempts for r in rows))


def _us(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:.0f} µs"


def report(rows: dict[str, Row], runs: dict[str, list[Row]], costs: dict[str, float], args,
           console: Console) -> str:
    table = Table(title=f"Governance filters: {args.connections} connections at saturation; "
                        f"{args.rate} req/s fixed; {args.duration} s each; "
                        f"median of {args.rounds} round(s)"
                        + (f"; per-try timeout {args.per_try_timeout:g} s"
                           if args.per_try_timeout else ""))
    for col in ("config", "req/s", "p50", "p99", "CPU/req", f"p50 @{args.rate}/s",
                f"p99 @{args.rate}/s", f"CPU/req @{args.rate}/s", "filters µs/req", "errors",
                "other load"):
        table.add_column(col, justify="left" if col == "config" else "right")
    for name, r in rows.items():
        table.add_row(name, f"{r.saturation.rps:,.0f}", _us(r.saturation.p50_us),
                      _us(r.saturation.p99_us), _us(r.cpu_sat_us), _us(r.paced.p50_us),
                      _us(r.paced.p99_us), _us(r.cpu_us), f"{costs[name]:.2f}",
                      str(r.saturation.errors + r.paced.errors), f"{r.other_load:.0%}")
    console.print(table)
    console.print("  CPU/req: the sidecar's CPU time (user + system) over the requests it served "
                  "in that load; other load: the largest share of the proxy CPU that processes "
                  "outside the benchmark or the hypervisor (steal) took while a configuration "
                  "was measured")
    for name, rs in runs.items():
        console.print(f"  {name} by round: req/s "
                      + ", ".join(f"{r.saturation.rps:,.0f}" for r in rs)
                      + "; CPU/req " + ", ".join(_us(r.cpu_sat_us) for r in rs)
                      + f"; CPU/req @{args.rate}/s " + ", ".join(_us(r.cpu_us) for r in rs)
                      + "; other load " + ", ".join(f"{r.other_load:.0%}" for r in rs))
    gov = rows.get("governance")
    base = rows.get("none")
    if gov is not None:
        console.print(f"  governance: nothing tripped; {gov.hc_attempts} health checks in the "
                      f"longest-lived run")
    if gov is not None and base is not None and base.cpu_sat_us and base.cpu_us:
        console.print(f"  CPU per request, governance over none: "
                      f"{gov.cpu_sat_us / base.cpu_sat_us:.2f} at saturation, "
                      f"{gov.cpu_us / base.cpu_us:.2f} at {args.rate} req/s")
    # A round measures both configurations seconds apart: its own ratio is spared the
    # machine's slower swings, which the medians of each configuration mix in. So the
    # cost reported is the median of the rounds' own costs.
    pairs = [(n, g) for n, g in zip(runs.get("none", ()), runs.get("governance", ()))
             if n.saturation.rps > 0]
    if not pairs:
        return "governance: cost_pct=n/a rps_none=n/a rps_governance=n/a"
    costs = sorted((1 - g.saturation.rps / n.saturation.rps) * 100 for n, g in pairs)
    cost = costs[len(costs) // 2] if len(costs) % 2 else sum(costs[len(costs) // 2 - 1:
                                                                  len(costs) // 2 + 1]) / 2
    console.print("  cost by round (1 - governance/none req/s): "
                  + ", ".join(f"{c:.1f}%" for c in costs) + f"; median {cost:.1f}%")
    return (f"governance: cost_pct={cost:.1f} rps_none={base.saturation.rps:.0f} "
            f"rps_governance={gov.saturation.rps:.0f}")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk before measuring")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument("--rate", type=int, default=1000, help="fixed-rate load, req/s")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (1..9)")
    ap.add_argument("--per-try-timeout", type=float, metavar="S",
                    help="also give the governance route's retries a per-try timeout (a loop "
                         "timer per try)")
    args = ap.parse_args(argv)
    if not 1 <= args.rounds <= 9:
        ap.error("--rounds must be 1..9")
    if not 1 <= args.duration <= 300 or not 0 <= args.warmup <= 60:
        ap.error("--duration must be 1..300 seconds and --warmup 0..60")
    if not 1 <= args.rate <= 20_000:
        ap.error("--rate must be 1..20000")
    if args.per_try_timeout is not None and not 0.05 <= args.per_try_timeout <= 60:
        ap.error("--per-try-timeout must be 0.05..60 seconds")
    return args



def main(argv=None) -> int:
    args = parse_args(argv)
    require_tools("nginx", "wrk")
    stop_on_signals()
    console = Console(width=None if sys.stdout.isatty() else 140)
    proxy_cpus, load_cpus = cpu_plan()
    if proxy_cpus == load_cpus:
        console.print("[yellow]one CPU only: proxy and load share it; numbers say little[/]")
    load_before = load_average()
    runs: dict[str, list[Row]] = {}
    with tempfile.TemporaryDirectory(prefix="plait-bench-governance-") as tmp:
        procs = Procs(Path(tmp))
        try:
            upstream = start_nginx(procs, Path(tmp), cpus=load_cpus)
            for round_no in range(1, args.rounds + 1):
                # Which goes first alternates, so a slow drift of the machine favours
                # neither.
                order = SCENARIOS if round_no % 2 else SCENARIOS[::-1]
                console.print(f"round {round_no}/{args.rounds}: {', then '.join(order)} …")
                rows = measure_round(order, procs, Path(tmp), upstream, args, proxy_cpus,
                                     load_cpus)
                for scenario, row in rows.items():
                    runs.setdefault(scenario, []).append(row)
        except KeyboardInterrupt:
            console.print("interrupted; stopping everything")
            return 130
        except RuntimeError as exc:
            console.print(f"[red]benchmark failed:[/] {exc}")
            return 1
        finally:
            procs.stop_all()
    costs = {name: filter_cost_us(name, args) for name in SCENARIOS}
    summary = report({name: combine(rs) for name, rs in runs.items()}, runs, costs, args,
                     console)
    console.print(f"load average {load_before:.2f} before, {load_average():.2f} after")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
