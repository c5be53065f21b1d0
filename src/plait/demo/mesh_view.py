"""The mesh demo's live view: what the client sees, split by the versions that answered."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from plait.demo.traffic import ClientStats


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def render(*, title: str, stats: ClientStats, canary, instances) -> Group:
    client = Table(title="client (last 5 s)")
    for col in ("req/s", "p50", "p99", "requests", "ok", "errors"):
        client.add_column(col, justify="right")
    p50, p99 = stats.recent_percentiles(50, 99)
    client.add_row(f"{stats.rate():.0f}", _ms(p50), _ms(p99), str(stats.requests),
                   f"[green]{stats.ok}[/]", f"[red]{stats.errors}[/]" if stats.errors else "0")

    split = Table(title="who answered (last 5 s)")
    split.add_column("chain", overflow="fold", min_width=24)
    split.add_column("share", justify="right")
    split.add_column("total", justify="right")
    shares = stats.recent_tag_shares()
    for tag in sorted(set(shares) | set(stats.by_tag)):
        split.add_row(tag.replace(">", " → "), f"{shares.get(tag, 0.0) * 100:5.1f}%", str(stats.by_tag[tag]))
    for status, count in sorted(stats.by_status.items()):
        if not status.startswith("2"):
            split.add_row(f"[red]status {status}[/]", "", str(count))

    walk = Table(title="canary")
    walk.add_column("step")
    walk.add_column("reached frontend's sidecar in", justify="right")
    for percent, ms in canary.steps:
        walk.add_row(f"catalog v2 at {percent}%", f"{ms:.0f} ms")
    walk.add_row(f"[bold]{canary.stage}[/]", "")

    procs = Table(title="processes")
    procs.add_column("service")
    procs.add_column("app pid", justify="right")
    procs.add_column("sidecar pid", justify="right")
    procs.add_column("inbound", justify="right")
    for inst in instances:
        procs.add_row(f"{inst.service} {inst.version}", str(inst.app_pid),
                      str(inst.sidecar_pid), str(inst.inbound))

    grid = Table.grid(padding=(0, 2))
    grid.add_row(split, walk)
    return Group(Text(title, style="bold"), client, grid, procs)
