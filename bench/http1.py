"""HTTP/1.1 through Plait's sidecar, beside HAProxy and no proxy at all.

One run starts an nginx upstream; each round starts the proxies (haproxy, plait) and
measures every scenario (direct, haproxy, plait) two ways:
- saturation: wrk, one thread, 32 keep-alive connections, --duration seconds, one
  scenario after another (after --warmup seconds of the same);
- fixed rate: 1,000 req/s from `_paced.py` (open loop, per-request latency), to the three
  in turns of half a second until each has had --duration seconds, so that the latencies
  compared meet the same machine, seconds apart.
The proxy runs alone on one CPU; nginx and the load generators share the other, so the
proxy never competes with the load for a core. Peak RSS is VmHWM summed over the proxy's
processes. The last line printed is the summary other tools read:

    http1: plait_vs_haproxy_rps=<ratio> added_p50_vs_haproxy=<ratio> rss_mb=<peak>

where added p50 is a proxy's p50 minus direct's p50 at 1,000 req/s.

A round in which something outside the benchmark (another process, or the hypervisor's
steal) took more than --max-other-load of the proxy's CPU while a scenario was measured
is measured again, all of its scenarios, up to --rounds more times in a run; the rounds
set aside are listed with their readings and left out of the medians.
Method and recorded numbers: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _harness import (Interference, LoadResult, Procs, cpu_plan, group_cpu_ticks, load_average,
                      median_result, peak_rss_mb, run_paced_in_turns, run_wrk,
                      stop_on_signals)
from _peers import Server, require_tools, start_haproxy, start_nginx
from _plait import start_sidecar

SCENARIOS = ("direct", "haproxy", "plait")


@dataclass
class Row:
    name: str
    saturation: LoadResult
    paced: LoadResult
    rss_mb: float | None
    other_load: float  # share of the proxy CPU used by processes not in the benchmark
    cpu_us_per_request: float | None  # the proxy's own CPU time per request at saturation


def start_proxy(name: str, procs: Procs, workdir: Path, upstream: Server, cpus) -> Server:
    if name == "direct":
        return upstream
    if name == "haproxy":
        return start_haproxy(procs, workdir, upstream, cpus=cpus)
    if name == "plait":
        return start_sidecar(procs, workdir, upstream, cpus=cpus, concurrency=1)
    raise ValueError(name)


def measure_round(targets: dict[str, Server], procs: Procs, args, proxy_cpus, load_cpus,
                  console: Console, round_no: int) -> dict[str, Row]:
    """Saturation for each scenario in turn, then the fixed rate for all of them in turns."""
    saturated = {}
    for name, target in targets.items():
        console.print(f"[bold]{name}[/]: saturation (round {round_no}/{args.rounds}) …")
        if args.warmup:
            run_wrk(procs, target.url, connections=args.connections, seconds=args.warmup,
                    cpus=load_cpus)
        proxy = None if name == "direct" else target.proc
        interference = Interference(min(proxy_cpus), proxy)
        interference.start()
        ticks = group_cpu_ticks(proxy) if proxy else 0
        result = run_wrk(procs, target.url, connections=args.connections,
                         seconds=args.duration, cpus=load_cpus)
        cpu_us = None
        if proxy and result.requests:
            cpu_us = ((group_cpu_ticks(proxy) - ticks) / os.sysconf("SC_CLK_TCK") * 1e6
                      / result.requests)
        saturated[name] = (result, cpu_us, interference.share())
    console.print(f"[bold]{', '.join(targets)}[/]: {args.rate} req/s in turns "
                  f"(round {round_no}/{args.rounds}) …")
    proxies = [t.proc for name, t in targets.items() if name != "direct"]
    interference = Interference(min(proxy_cpus), proxies)
    interference.start()
    paced = run_paced_in_turns(procs, [(t.host, t.port) for t in targets.values()],
                               rate=args.rate, seconds=args.duration, cpus=load_cpus)
    paced_other = interference.share()
    console.print(f"  other load while at the fixed rate: {paced_other:.0%}; at saturation: "
                  + ", ".join(f"{name} {other:.0%}" for name, (_, _, other) in saturated.items()))
    rows = {}
    for (name, target), fixed in zip(targets.items(), paced):
        result, cpu_us, other = saturated[name]
        rss = None if name == "direct" else peak_rss_mb(target.proc)
        rows[name] = Row(name, result, fixed, rss, max(other, paced_other), cpu_us)
    return rows


def combine(rows: list[Row]) -> Row:
    """One row from several rounds: medians of the measurements, the highest peak RSS."""
    rss = [r.rss_mb for r in rows if r.rss_mb is not None]
    return Row(rows[0].name, median_result([r.saturation for r in rows]),
               median_result([r.paced for r in rows]), max(rss) if rss else None,
               max(r.other_load for r in rows), _median([r.cpu_us_per_request for r in rows]))


def _median(values: list[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    return present[len(present) // 2] if present else None


def _us(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:.0f} µs"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b <= 0 else f"{a / b:.2f}"


def report(rows: dict[str, Row], rounds: dict[str, list[Row]], args, console: Console) -> str:
    table = Table(title=f"HTTP/1.1, {args.connections} connections at saturation; "
                        f"{args.rate} req/s fixed; {args.duration:g} s each"
                        + (f"; medians of {args.rounds} rounds" if args.rounds > 1 else ""))
    for col in ("name", "req/s", "p50", "p99", f"p50 @{args.rate}/s", f"p99 @{args.rate}/s",
                f"added p50 @{args.rate}/s", "CPU/req", "RSS MB", "errors", "other load"):
        table.add_column(col, justify="left" if col == "name" else "right")
    direct = rows.get("direct")
    added: dict[str, float | None] = {}
    for name, row in rows.items():
        added[name] = row.paced.p50_us - direct.paced.p50_us if direct else None
        table.add_row(
            name, f"{row.saturation.rps:,.0f}", _us(row.saturation.p50_us), _us(row.saturation.p99_us),
            _us(row.paced.p50_us), _us(row.paced.p99_us),
            "—" if added[name] is None or name == "direct" else _us(added[name]),
            "—" if row.cpu_us_per_request is None else f"{row.cpu_us_per_request:.1f} µs",
            "—" if row.rss_mb is None else f"{row.rss_mb:.1f}",
            str(row.saturation.errors + row.paced.errors), f"{row.other_load:.0%}")
    console.print(table)
    console.print("  CPU/req: the proxy's own CPU time (user + system) per request at saturation.\n"
                  "  other load: the largest share of the proxy CPU that processes outside the "
                  "benchmark or the hypervisor (steal) took while a scenario was measured.")
    for name, row in rows.items():
        runs = row.paced.extra.get("runs", [row.paced.extra])
        lag = max(run["paced"]["lag_p99"] for run in runs)
        queued = sum(run["paced"]["queued"] for run in runs)
        console.print(f"  {name}: fixed rate over {len(runs)} run(s): worst send lag p99 {_us(lag)}, "
                      f"requests that waited for a connection {queued}")
    pairs = list(zip(rounds.get("haproxy", ()), rounds.get("plait", ())))
    if len(pairs) > 1:
        # The two proxies of a round are measured seconds apart, so a round's own ratio
        # is spared the machine's slower swings that the medians above mix in.
        line = ("  by round, plait / haproxy: req/s "
                + ", ".join(_ratio(p.saturation.rps, h.saturation.rps) for h, p in pairs)
                + "; CPU/req " + ", ".join(_ratio(p.cpu_us_per_request,
                                                  h.cpu_us_per_request) for h, p in pairs))
        directs = rounds.get("direct", ())
        if len(directs) == len(pairs):
            line += "; added p50 " + ", ".join(
                _ratio(p.paced.p50_us - d.paced.p50_us, h.paced.p50_us - d.paced.p50_us)
                for d, (h, p) in zip(directs, pairs))
        console.print(line)
    plait, haproxy = rows.get("plait"), rows.get("haproxy")
    rps = _ratio(plait and plait.saturation.rps, haproxy and haproxy.saturation.rps)
    p50 = _ratio(added.get("plait"), added.get("haproxy"))
    rss = "n/a" if plait is None else f"{plait.rss_mb:.1f}"
    return f"http1: plait_vs_haproxy_rps={rps} added_p50_vs_haproxy={p50} rss_mb={rss}"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk before measuring")
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--rate", type=int, default=1000, help="fixed-rate load, req/s")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections at saturation")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat all scenarios, interleaved, and report medians (1..9)")
    ap.add_argument("--max-other-load", type=float, default=5.0, metavar="PCT",
                    help="measure a round again when other work took more than PCT%% of "
                         "the proxy CPU during it (default 5; 100 keeps every round)")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    args = ap.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
    if not 1 <= args.rounds <= 9:
        ap.error("--rounds must be 1..9")
    if not 0 < args.max_other_load <= 100:
        ap.error("--max-other-load must be above 0 and at most 100")
    if not 1 <= args.duration <= 300 or not 0 <= args.warmup <= 60:
        ap.error("--duration must be 1..300 seconds and --warmup 0..60")
    return args



def main(argv=None) -> int:
    args = parse_args(argv)
    require_tools("nginx", "wrk", *(["haproxy"] if "haproxy" in args.only else []))
    stop_on_signals()
    console = Console(width=None if sys.stdout.isatty() else 140)
    proxy_cpus, load_cpus = cpu_plan()
    if proxy_cpus == load_cpus:
        console.print("[yellow]one CPU only: proxy and load share it; numbers say little[/]")
    load_before = load_average()
    if load_before > 0.5:
        console.print(f"[yellow]load average {load_before:.2f} before start: other work is "
                      f"running, numbers will be noisy (consider --rounds 3)[/]")
    runs: dict[str, list[Row]] = {}
    set_aside: list[dict[str, Row]] = []
    with tempfile.TemporaryDirectory(prefix="plait-bench-") as tmp:
        procs = Procs(Path(tmp))
        try:
            upstream = start_nginx(procs, Path(tmp), cpus=load_cpus)
            round_no = 1
            while round_no <= args.rounds:
                targets: dict[str, Server] = {}
                try:
                    for name in [s for s in SCENARIOS if s in args.only]:
                        targets[name] = start_proxy(name, procs, Path(tmp), upstream, proxy_cpus)
                    this_round = measure_round(targets, procs, args, proxy_cpus, load_cpus,
                                               console, round_no)
                finally:
                    for target in targets.values():
                        if target is not upstream:
                            procs.stop(target.proc)
                worst = max(row.other_load for row in this_round.values())
                if worst * 100 > args.max_other_load and len(set_aside) < args.rounds:
                    console.print(f"[yellow]round {round_no}: other work took {worst:.0%} of the "
                                  f"proxy CPU; measuring it again[/]")
                    set_aside.append(this_round)
                    continue
                for name, row in this_round.items():
                    runs.setdefault(name, []).append(row)
                round_no += 1
        except KeyboardInterrupt:
            console.print("interrupted; stopping everything")
            return 130
        except RuntimeError as exc:  # a process failed to start or to report
            console.print(f"[red]benchmark failed:[/] {exc}")
            return 1
        finally:
            procs.stop_all()
    rows = {name: combine(rs) for name, rs in runs.items()}
    summary = report(rows, runs, args, console)
    for k, aside in enumerate(set_aside, 1):
        console.print(f"  set aside {k}: " + "; ".join(
            f"{name} {row.saturation.rps:,.0f} req/s, p50 @{args.rate}/s "
            f"{_us(row.paced.p50_us)}, other load {row.other_load:.0%}"
            for name, row in aside.items()))
    console.print(f"load average {load_before:.2f} before, {load_average():.2f} after")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "http1", "python": sys.version.split()[0], "machine": platform.machine(),
            "proxy_cpus": sorted(proxy_cpus), "load_cpus": sorted(load_cpus),
            "duration": args.duration, "rate": args.rate, "connections": args.connections,
            "rounds": args.rounds, "load_average_before": load_before,
            "max_other_load_pct": args.max_other_load,
            "set_aside": [{name: asdict(row) for name, row in aside.items()}
                          for aside in set_aside],
            "rows": {name: asdict(row) for name, row in rows.items()}, "summary": summary,
        }, indent=2))
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
