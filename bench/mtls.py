"""mTLS between two sidecars against plaintext, and new mTLS connections per second.

The path measured is the mesh's: client → sidecar A (outbound) → sidecar B (inbound) →
nginx, with A → B in plaintext or in mutual TLS (TLS 1.3, ECDSA P-256 workload
certificates from a mesh CA made for the run; B's listener STRICT, A's cluster checking
B's SPIFFE ID). Both sidecars share the proxy CPU; nginx and the load share the other.
Per round and mode, fresh sidecars are started and measured three ways:

- saturation: wrk, one thread, 32 keep-alive connections (A keeps its pooled connections
  to B, so TLS costs record encryption only);
- fixed rate: 1,000 req/s from `_paced.py`, for the latency the TLS hop adds;
- new connections: wrk with `Connection: close` and A's cluster at one request per
  upstream connection, so every request is a new A → B connection (in mtls mode a full
  handshake with client certificate, both sides verifying).

The last line printed is the summary:

    mtls: mtls_vs_plain_rps=<ratio> added_p50_us=<µs> new_tls_conn_per_s=<n> new_plain_conn_per_s=<n>

Method and recorded numbers: docs/performance.md, section "mTLS".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _harness import (LoadResult, Procs, cpu_plan, free_port, load_average, median_result,
                      run_paced, run_wrk, stop_on_signals)
from _peers import Server, require_tools, start_nginx

from plait.controlplane.ca import Authority
from plait.testing import mtls
from plait.testing import sidecar as sc

MODES = ("plain", "mtls")
READY_PREFIX = "plait sidecar ready"


@dataclass
class Row:
    mode: str
    saturation: LoadResult
    paced: LoadResult
    churn: LoadResult  # Connection: close, one request per upstream connection


def identities(workdir: Path) -> dict:
    ca = Authority.open(workdir / "ca", trust_domain="cluster.local")
    return {"a": mtls.issue_identity(ca, workdir / "id-a", namespace="bench", account="a"),
            "b": mtls.issue_identity(ca, workdir / "id-b", namespace="bench", account="b")}


def bootstraps(mode: str, ids: dict, upstream: Server, *, churn: bool) -> tuple[dict, dict]:
    b_port, a_port = free_port(), free_port()
    inbound = sc.listener("inbound", [sc.virtual_host("all", ["*"], [sc.route("app")])],
                          port=b_port, direction="INBOUND")
    cluster_b = sc.cluster("b", [b_port])
    if mode == "mtls":
        inbound = mtls.strict(inbound, mtls.downstream_tls(ids["b"]))
        cluster_b["transport_socket"] = mtls.upstream_tls(ids["a"], peer_names=[
            {"exact": "spiffe://cluster.local/ns/bench/sa/b"}])
    if churn:
        cluster_b["max_requests_per_connection"] = 1
    b = sc.bootstrap(listeners=[inbound], clusters=[sc.cluster("app", [upstream.port])],
                     node="b")
    a = sc.bootstrap(listeners=[sc.listener("outbound", [sc.virtual_host(
        "all", ["*"], [sc.route("b")])], port=a_port)], clusters=[cluster_b], node="a")
    return a, b


def start(procs: Procs, workdir: Path, name: str, config: dict, cpus) -> Server:
    path = sc.write_bootstrap(config, workdir / name)
    argv = [sys.executable, "-m", "plait", "sidecar", "--bootstrap", str(path),
            "--access-log", "off"]
    proc = procs.start(f"sidecar-{name}", argv, cpus=cpus, ready_prefix=READY_PREFIX)
    procs.wait_line(proc, timeout=30)
    port = config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    return Server(proc, "127.0.0.1", port)


def pair(mode: str, procs: Procs, workdir: Path, ids, upstream, cpus, *, churn: bool):
    a_cfg, b_cfg = bootstraps(mode, ids, upstream, churn=churn)
    where = workdir / f"{mode}-{'churn' if churn else 'keep'}"
    (where / "a").mkdir(parents=True)
    (where / "b").mkdir(parents=True)
    b = start(procs, where, "b", b_cfg, cpus)
    a = start(procs, where, "a", a_cfg, cpus)
    return a, b


def measure(mode: str, procs: Procs, workdir: Path, ids, upstream, args, proxy_cpus,
            load_cpus) -> Row:
    a, b = pair(mode, procs, workdir, ids, upstream, proxy_cpus, churn=False)
    try:
        if args.warmup:
            run_wrk(procs, a.url, connections=args.connections, seconds=args.warmup,
                    cpus=load_cpus)
        saturation = run_wrk(procs, a.url, connections=args.connections,
                             seconds=args.duration, cpus=load_cpus)
        paced = run_paced(procs, a.host, a.port, rate=args.rate, seconds=args.duration,
                          cpus=load_cpus)
    finally:
        procs.stop(a.proc)
        procs.stop(b.proc)
    a, b = pair(mode, procs, workdir, ids, upstream, proxy_cpus, churn=True)
    try:
        churn = run_wrk(procs, a.url, connections=args.connections, seconds=args.duration,
                        cpus=load_cpus, headers={"Connection": "close"})
    finally:
        procs.stop(a.proc)
        procs.stop(b.proc)
    return Row(mode, saturation, paced, churn)


def _us(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:.0f} µs"


def report(rows: dict[str, Row], args, console: Console) -> str:
    table = Table(title=f"client → sidecar A → sidecar B → nginx; {args.connections} "
                        f"connections; {args.rate} req/s fixed; {args.duration} s each"
                        + (f"; medians of {args.rounds} rounds" if args.rounds > 1 else ""))
    for col in ("A → B", "req/s", "p50", "p99", f"p50 @{args.rate}/s", f"p99 @{args.rate}/s",
                "new conn/s", "errors"):
        table.add_column(col, justify="left" if col == "A → B" else "right")
    for mode, row in rows.items():
        table.add_row(mode, f"{row.saturation.rps:,.0f}", _us(row.saturation.p50_us),
                      _us(row.saturation.p99_us), _us(row.paced.p50_us), _us(row.paced.p99_us),
                      f"{row.churn.rps:,.0f}",
                      str(row.saturation.errors + row.paced.errors + row.churn.errors))
    console.print(table)
    console.print("  new conn/s: requests per second with `Connection: close` and one request "
                  "per A → B connection: each is a new connection (a full mTLS handshake in mtls)")
    plain, secure = rows.get("plain"), rows.get("mtls")
    if plain is None or secure is None:
        return "mtls: incomplete (run both modes)"
    ratio = secure.saturation.rps / plain.saturation.rps if plain.saturation.rps else 0.0
    added = secure.paced.p50_us - plain.paced.p50_us
    return (f"mtls: mtls_vs_plain_rps={ratio:.2f} added_p50_us={added:.0f} "
            f"new_tls_conn_per_s={secure.churn.rps:.0f} new_plain_conn_per_s={plain.churn.rps:.0f}")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk before measuring")
    ap.add_argument("--rate", type=int, default=1000, help="fixed-rate load, req/s")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved repeats (1..9)")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    args = ap.parse_args(argv)
    if not 1 <= args.rounds <= 9 or not 1 <= args.duration <= 300 or not 0 <= args.warmup <= 60:
        ap.error("--rounds 1..9, --duration 1..300, --warmup 0..60")
    return args



def main(argv=None) -> int:
    args = parse_args(argv)
    require_tools("nginx", "wrk")
    stop_on_signals()
    console = Console(width=None if sys.stdout.isatty() else 140)
    proxy_cpus, load_cpus = cpu_plan()
    load_before = load_average()
    runs: dict[str, list[Row]] = {}
    with tempfile.TemporaryDirectory(prefix="plait-bench-mtls-") as tmp:
        work = Path(tmp)
        procs = Procs(work)
        try:
            ids = identities(work)
            upstream = start_nginx(procs, work, cpus=load_cpus)
            for round_no in range(1, args.rounds + 1):
                for mode in MODES:
                    console.print(f"[bold]{mode}[/]: measuring (round {round_no}/{args.rounds}) …")
                    runs.setdefault(mode, []).append(measure(
                        mode, procs, work / f"r{round_no}-{mode}", ids, upstream, args,
                        proxy_cpus, load_cpus))
        except KeyboardInterrupt:
            console.print("interrupted; stopping everything")
            return 130
        except RuntimeError as exc:
            console.print(f"[red]benchmark failed:[/] {exc}")
            return 1
        finally:
            procs.stop_all()
    rows = {mode: Row(mode, median_result([r.saturation for r in rs]),
                      median_result([r.paced for r in rs]), median_result([r.churn for r in rs]))
            for mode, rs in runs.items()}
    summary = report(rows, args, console)
    console.print(f"load average {load_before:.2f} before, {load_average():.2f} after")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "mtls", "proxy_cpus": sorted(proxy_cpus), "load_cpus": sorted(load_cpus),
            "duration": args.duration, "rate": args.rate, "connections": args.connections,
            "rounds": args.rounds, "rows": {m: asdict(r) for m, r in rows.items()},
            "summary": summary}, indent=2, default=str))
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
