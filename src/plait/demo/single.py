"""The single-sidecar demo: client → plait sidecar → demo app, watched live.

Starts the demo app on a free port, writes a bootstrap that points one outbound listener at
it, starts `plait sidecar` with that bootstrap, and sends paced traffic through the sidecar
while a live view shows what the client sees beside the sidecar's own counters and access
log. It runs until Ctrl-C or SIGTERM (or `--duration` seconds), then stops every process it
started and prints a plain summary line:

    demo: requests=N ok=M errors=E rps=R p50_ms=A p99_ms=B

Exit status: 0 after a clean run or an interrupt, 1 if a process failed to start.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import uvloop
from rich.console import Console

from plait.demo import bootstrap
from plait.demo.app import READY_PREFIX as APP_READY
from plait.demo.procs import Supervisor, run_until_signal
from plait.demo.traffic import ClientStats, Traffic
from plait.demo.view import SidecarStats, render, show

SIDECAR_READY = "plait sidecar ready"


async def run(args: argparse.Namespace, stats: ClientStats, console: Console) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="plait-demo-"))
    try:
        async with Supervisor() as sup:
            app = await sup.start("app", [
                sys.executable, "-m", "plait.demo.app", "--port", "0",
                "--name", args.app_name, "--version", args.app_version,
            ], ready_prefix=APP_READY)
            listen_port, admin_port = bootstrap.free_port(), bootstrap.free_port()
            config = bootstrap.write(bootstrap.single_cluster(
                node="demo", listen_port=listen_port, admin_port=admin_port,
                upstream_port=int(app.value_of("port"))), workdir / "bootstrap.yaml")
            access_log = workdir / "access.log"
            sidecar = await sup.start("sidecar", [
                sys.executable, "-m", "plait", "sidecar", "--bootstrap", str(config),
                "--concurrency", "1", "--access-log", str(access_log),
            ], ready_prefix=SIDECAR_READY, timeout=30)
            print(f"demo: processes=app:{app.pid},sidecar:{sidecar.pid}", flush=True)

            admin = SidecarStats(f"http://127.0.0.1:{admin_port}")
            traffic = Traffic("127.0.0.1", listen_port, rate=args.rate)
            title = (f"plait demo: client → sidecar 127.0.0.1:{listen_port} → "
                     f"{args.app_name} {args.app_version} at 127.0.0.1:{app.value_of('port')}"
                     f"  ({args.rate:g} req/s; Ctrl-C stops)")
            view = asyncio.create_task(show(console, lambda: render(
                title=title, stats=stats, sidecar=admin, access_log=access_log)))
            poller = asyncio.create_task(admin.poll())
            try:
                await traffic.run(stats, duration_s=args.duration)
            finally:
                for task in (poller, view):
                    task.cancel()
                await asyncio.gather(poller, view, return_exceptions=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def main_async(args: argparse.Namespace, stats: ClientStats, console: Console) -> int:
    """Runs the demo; the first SIGINT/SIGTERM cancels it (and so stops the children)."""
    return await run_until_signal(lambda: run(args, stats, console), console)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m plait.demo single", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=None,
                    help="stop after this many seconds (default: run until Ctrl-C)")
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second (at most 5000)")
    ap.add_argument("--app-name", default="demo-app")
    ap.add_argument("--app-version", default="v1")
    args = ap.parse_args(argv)
    if args.duration is not None and args.duration <= 0:
        ap.error("--duration must be positive")
    if not 0 < args.rate <= 5000:
        ap.error("--rate must be in (0, 5000]")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console()
    stats = ClientStats()
    code = uvloop.run(main_async(args, stats, console))
    p50, p99 = stats.overall_percentiles(50, 99)
    elapsed = max(1e-9, stats.recent[-1][0] - stats.started) if stats.recent else 0.0
    rps = stats.requests / elapsed if elapsed else 0.0
    print(f"demo: requests={stats.requests} ok={stats.ok} errors={stats.errors} "
          f"rps={rps:.1f} p50_ms={p50 * 1000:.2f} p99_ms={p99 * 1000:.2f}", flush=True)
    return code
