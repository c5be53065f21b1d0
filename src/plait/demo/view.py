"""The live terminal view of a demo, and the reader of a sidecar's own counters.

`SidecarStats.poll` reads the admin `/stats/prometheus` page about once a second and keeps
the latest samples (the text format is simple enough to parse here: `name{labels} value`
lines, `#` comments skipped). `render` turns the client's statistics, the sidecar's samples
and the tail of the sidecar's access log into one rich renderable; `show` redraws it with
rich.Live until cancelled. Histogram buckets are left out of the counters table: it shows
counters and gauges, busiest first.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from plait.demo.traffic import ClientStats

MAX_COUNTER_ROWS = 14


def parse_prometheus(text: str) -> list[tuple[str, float]]:
    """(name with labels, value) for every sample line of a Prometheus text exposition."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # The value follows the last space outside the label set; an optional timestamp
        # would follow it, so split from the right after the closing brace.
        head, _, rest = line.rpartition("}") if "}" in line else ("", "", line)
        parts = rest.split()
        if head:
            name, value = head + "}", parts[0] if parts else ""
        elif len(parts) >= 2:
            name, value = parts[0], parts[1]
        else:
            continue
        try:
            samples.append((name, float(value)))
        except ValueError:
            continue
    return samples


@dataclass
class SidecarStats:
    admin_url: str
    samples: list[tuple[str, float]] = field(default_factory=list)
    error: str = ""
    updated: float = 0.0

    async def poll(self, interval_s: float = 1.0) -> None:
        """Refreshes `samples` every interval until cancelled; failures land in `error`."""
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                try:
                    response = await client.get(self.admin_url + "/stats/prometheus")
                    if response.status_code == 200:
                        self.samples, self.error = parse_prometheus(response.text), ""
                        self.updated = time.monotonic()
                    else:
                        self.error = f"/stats/prometheus answered {response.status_code}"
                except httpx.HTTPError as exc:
                    self.error = f"/stats/prometheus: {type(exc).__name__}"
                await asyncio.sleep(interval_s)

    def top(self, limit: int = MAX_COUNTER_ROWS) -> list[tuple[str, float]]:
        rows = [(n, v) for n, v in self.samples
                if v and not n.split("{")[0].endswith(("_bucket", "_sum", "_created"))]
        return sorted(rows, key=lambda nv: -nv[1])[:limit]


def tail_lines(path: Path | None, count: int = 5, max_bytes: int = 8192) -> list[str]:
    """The last `count` lines of a file (read from its end), or none if it is absent."""
    if path is None or not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        lines = f.read().decode(errors="replace").splitlines()
    return lines[-count:]


def _access_line(line: str) -> str:
    """A JSON access-log entry squeezed onto one line; anything else as it is."""
    try:
        entry = json.loads(line)
        timing = entry.get("timing_ms") or {}
        text = (f"{entry.get('start_time', '')} {entry.get('code', '')} {entry.get('method', '')} "
                f"{entry.get('path', '')} → {entry.get('cluster', '')} {entry.get('upstream_host', '')} "
                f"{timing.get('total', '')} ms")
        return text + (f" error={entry['error']}" if entry.get("error") else "")
    except (ValueError, AttributeError):
        return line


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def render(*, title: str, stats: ClientStats, sidecar: SidecarStats,
           access_log: Path | None = None) -> Group:
    client = Table(title="client (last 5 s)", show_header=True, expand=False)
    for col in ("req/s", "p50", "p90", "p99", "requests", "ok", "errors"):
        client.add_column(col, justify="right")
    p50, p90, p99 = stats.recent_percentiles(50, 90, 99)
    client.add_row(f"{stats.rate():.0f}", _ms(p50), _ms(p90), _ms(p99), str(stats.requests),
                   f"[green]{stats.ok}[/]", f"[red]{stats.errors}[/]" if stats.errors else "0")

    codes = Table(title="responses", show_header=True)
    codes.add_column("status")
    codes.add_column("count", justify="right")
    for status, count in sorted(stats.by_status.items()):
        style = "green" if status.startswith("2") else "red"
        codes.add_row(f"[{style}]{status}[/]", str(count))
    for reason, count in sorted(stats.by_reason.items()):
        codes.add_row(f"[yellow]x-plait-error: {reason}[/]", str(count))

    counters = Table(title="sidecar /stats/prometheus", show_header=True)
    counters.add_column("metric", overflow="fold")
    counters.add_column("value", justify="right")
    for name, value in sidecar.top():
        counters.add_row(name, f"{value:,.0f}" if value == int(value) else f"{value:,.3f}")
    if sidecar.error:
        counters.add_row(f"[red]{sidecar.error}[/]", "")
    elif not sidecar.samples:
        counters.add_row("[dim]waiting for the first scrape[/]", "")

    parts = [Text(title, style="bold"), client, Table.grid(padding=(0, 2))]
    parts[2].add_row(codes, counters)
    log = [_access_line(line) for line in tail_lines(access_log)]
    if log:
        parts.append(Panel(Text("\n".join(log), no_wrap=True, overflow="ellipsis"),
                           title="sidecar access log (tail)"))
    return Group(*parts)


async def show(console: Console, draw, *, refresh_s: float = 0.5) -> None:
    """Redraws `draw()` with rich.Live until cancelled; the last frame stays on screen."""
    try:
        with Live(draw(), console=console, auto_refresh=False, transient=False) as live:
            try:
                while True:
                    await asyncio.sleep(refresh_s)
                    live.update(draw(), refresh=True)
            finally:
                live.update(draw(), refresh=True)
    finally:
        if not console.is_terminal:
            console.line()  # off a terminal the last frame ends without a newline
