"""The mesh demo: a control plane, four services behind sidecars, traffic, and a canary.

    client → frontend v1 → catalog v1 | v2 → pricing v1

Every app is `plait.demo.app` behind its own `plait sidecar`, steered by one
`plait control`: the sidecars register their apps, get their routes by xDS and carry each
call (frontend calls catalog through its sidecar, catalog calls pricing through its own).
Paced traffic goes to frontend's sidecar; each answer names the versions that served it.

It runs the way an operator would: the control plane requires tokens (the demo uses the
first admin token it writes), each service gets a join token bound to its identity, and
each sidecar makes its own key, enrolls with the mesh CA for a SPIFFE certificate before
it serves or registers, and talks mTLS to the other sidecars.

Once traffic flows, the demo walks a canary through the API, as an operator would:
catalog v2 at 10%, then 50%, then 100% (`VirtualService` weights over `DestinationRule`
subsets), printing how long each change took to reach frontend's sidecar, while the live
view shows the split actually moving. Ctrl-C (or `--duration`) stops every process it
started; it ends with a plain summary line:

    demo: requests=N ok=M errors=E v2_share=S canary=10%:Ams,50%:Bms,100%:Cms mtls_connections=K
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvloop
from rich.console import Console

from plait.demo.app import READY_PREFIX as APP_READY
from plait.demo.bootstrap import free_port
from plait.demo.mesh_view import render
from plait.demo.procs import ChildFailed, Supervisor, run_until_signal
from plait.demo.traffic import ClientStats, Traffic
from plait.demo.view import show

CONTROL_READY = "plait control ready"
SIDECAR_READY = "plait sidecar ready"
CANARY_STEPS = (10, 50, 100)  # catalog v2's share, in percent

# (service, version, the service it calls)
SERVICES = (("pricing", "v1", ""), ("catalog", "v1", "pricing"), ("catalog", "v2", "pricing"),
            ("frontend", "v1", "catalog"))

DESTINATION_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: catalog}
spec:
  host: catalog
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def virtual_service(v2_percent: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: catalog}}
spec:
  hosts: [catalog]
  http:
  - route:
    - destination: {{host: catalog, subset: v1}}
      weight: {100 - v2_percent}
    - destination: {{host: catalog, subset: v2}}
      weight: {v2_percent}
"""


@dataclass
class Instance:
    service: str
    version: str
    calls: str
    app_pid: int = 0
    sidecar_pid: int = 0
    inbound: int = field(default_factory=free_port)
    outbound: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)


@dataclass
class Canary:
    """What the view shows of the canary walk."""

    stage: str = "starting the mesh"
    steps: list[tuple[int, float]] = field(default_factory=list)  # (percent, propagation ms)
    mtls_connections: int = 0  # accepted over mTLS by the sidecars' inbound listeners


async def count_mtls(client: httpx.AsyncClient, instances: list[Instance]) -> int:
    """Connections the sidecars' inbound listeners accepted over mTLS (from their stats)."""
    total = 0
    for inst in instances:
        text = (await client.get(f"http://127.0.0.1:{inst.admin}/stats/prometheus")).text
        for line in text.splitlines():
            if line.startswith('plait_downstream_cx_tls_total{listener="inbound"}'):
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


async def join_token(client: httpx.AsyncClient, api: str, service: str, path: Path) -> Path:
    """A join token for `service`'s sidecars (identity ns/demo/sa/<service>), in a 0600 file."""
    response = await client.post(f"{api}/api/v1/tokens", json={
        "kind": "join", "namespace": "demo", "serviceAccount": service, "ttl": 3600})
    if response.status_code != 201:
        raise RuntimeError(f"join token refused: {response.text}")
    path.touch(mode=0o600)
    path.write_text(response.json()["token"])
    return path


async def start_mesh(sup: Supervisor, client: httpx.AsyncClient,
                     workdir: Path) -> tuple[str, list[Instance]]:
    admin_token = workdir / "admin.token"
    control = await sup.start("control", [
        sys.executable, "-m", "plait", "control", "--data-dir", str(workdir / "control"),
        "--api-port", "0", "--xds-port", "0", "--bootstrap-admin-token-file",
        str(admin_token)], ready_prefix=CONTROL_READY, timeout=30)
    api, xds = control.value_of("api"), control.value_of("xds")
    client.headers["authorization"] = f"Bearer {admin_token.read_text().strip()}"
    tokens = {}
    for service in sorted({spec[0] for spec in SERVICES}):
        tokens[service] = await join_token(client, f"http://{api}", service,
                                           workdir / f"{service}.token")
    instances = [Instance(*spec) for spec in SERVICES]
    for inst in instances:
        app_argv = [sys.executable, "-m", "plait.demo.app", "--port", "0",
                    "--name", inst.service, "--version", inst.version]
        if inst.calls:
            app_argv += ["--call", inst.calls, "--via", f"127.0.0.1:{inst.outbound}"]
        app = await sup.start(f"{inst.service}-{inst.version}", app_argv, ready_prefix=APP_READY)
        sidecar_argv = [
            sys.executable, "-m", "plait", "sidecar", "--xds", xds,
            "--registry", f"http://{api}", "--app", inst.service,
            "--app-port", app.value_of("port"), "--labels", f"version={inst.version}",
            "--inbound-port", str(inst.inbound), "--outbound-port", str(inst.outbound),
            "--admin-port", str(inst.admin), "--node-id", f"{inst.service}-{inst.version}",
            "--access-log", "off", "--cache-dir", str(workdir / "cache"),
            "--token-file", str(tokens[inst.service]),
            "--cert-dir", str(workdir / "certs" / f"{inst.service}-{inst.version}")]
        if inst.calls:
            sidecar_argv += ["--dependencies", inst.calls]
        sidecar = await sup.start(f"{inst.service}-{inst.version}-sidecar", sidecar_argv,
                                  ready_prefix=SIDECAR_READY, timeout=30)
        inst.app_pid, inst.sidecar_pid = app.pid, sidecar.pid
    return f"http://{api}", instances


async def wait_until(check, *, timeout: float, interval: float = 0.02):
    """Poll the coroutine function `check` until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("the mesh did not reach the expected state in time")
        await asyncio.sleep(interval)


async def apply(client: httpx.AsyncClient, api: str, text: str) -> None:
    response = await client.post(f"{api}/api/v1/apply", content=text,
                                 headers={"content-type": "application/yaml"})
    if response.status_code >= 300:
        raise RuntimeError(f"apply refused: {response.text}")


async def route_version(client: httpx.AsyncClient, admin_port: int) -> str:
    dump = (await client.get(f"http://127.0.0.1:{admin_port}/config_dump")).json()
    return dump.get("xds", {}).get("versions", {}).get("RouteConfiguration", "")


async def walk_canary(client: httpx.AsyncClient, api: str, frontend: Instance, canary: Canary,
                      *, step_seconds: float) -> None:
    for percent in CANARY_STEPS:
        await asyncio.sleep(step_seconds)
        canary.stage = f"applying catalog v2 at {percent}%"
        before = await route_version(client, frontend.admin)
        started = time.monotonic()
        await apply(client, api, virtual_service(percent))

        async def changed() -> bool:
            return await route_version(client, frontend.admin) != before

        await wait_until(changed, timeout=10)
        canary.steps.append((percent, (time.monotonic() - started) * 1000))
        canary.stage = "canary done: catalog v2 takes all traffic" if percent == 100 else \
            f"holding catalog v2 at {percent}%"


async def run(args: argparse.Namespace, stats: ClientStats, canary: Canary,
              console: Console) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="plait-mesh-demo-"))
    try:
        async with Supervisor() as sup, httpx.AsyncClient(timeout=5) as client:
            api, instances = await start_mesh(sup, client, workdir)
            print("demo: processes=" + ",".join(f"{c.name}:{c.pid}" for c in sup.children),
                  flush=True)
            await apply(client, api, DESTINATION_RULE + "---\n" + virtual_service(0))

            async def all_registered() -> bool:
                services = (await client.get(f"{api}/api/v1/registry/services")).json()
                return sum(len(s.get("instances", [])) for s in services.get("services", [])) \
                    >= len(instances)

            await wait_until(all_registered, timeout=15, interval=0.1)
            frontend = instances[-1]
            traffic = Traffic("127.0.0.1", frontend.inbound, rate=args.rate,
                              headers={"host": "frontend"})
            canary.stage = "catalog v2 at 0%"
            title = (f"plait mesh demo: client → frontend → catalog v1|v2 → pricing "
                     f"({args.rate:g} req/s through {len(instances)} sidecars, mTLS between "
                     f"them with SPIFFE identities from the mesh CA; Ctrl-C stops)")
            view = asyncio.create_task(show(console, lambda: render(
                title=title, stats=stats, canary=canary, instances=instances)))
            walker = asyncio.create_task(walk_canary(client, api, frontend, canary,
                                                     step_seconds=args.step))
            try:
                await traffic.run(stats, duration_s=args.duration)
                canary.mtls_connections = await count_mtls(client, instances)
            finally:
                for task in (walker, view):
                    task.cancel()
                results = await asyncio.gather(walker, view, return_exceptions=True)
                for result in results:
                    if isinstance(result, Exception) and not isinstance(
                            result, asyncio.CancelledError):
                        console.print(f"[red]demo step failed:[/] {result}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def main_async(args, stats: ClientStats, canary: Canary, console: Console) -> int:
    return await run_until_signal(
        lambda: run(args, stats, canary, console), console,
        failures=(ChildFailed, TimeoutError, RuntimeError, httpx.HTTPError))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m plait.demo",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=None,
                    help="stop after this many seconds (default: run until Ctrl-C)")
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second")
    ap.add_argument("--step", type=float, default=10.0,
                    help="seconds between canary steps (10%%, 50%%, 100%%)")
    args = ap.parse_args(argv)
    if args.duration is not None and args.duration <= 0:
        ap.error("--duration must be positive")
    if not 0 < args.rate <= 2000 or args.step <= 0:
        ap.error("--rate must be in (0, 2000] and --step positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console()
    stats, canary = ClientStats(), Canary()
    code = uvloop.run(main_async(args, stats, canary, console))
    shares = stats.recent_tag_shares()
    v2 = sum(share for tag, share in shares.items() if "catalog/v2" in tag)
    steps = ",".join(f"{p}%:{ms:.0f}ms" for p, ms in canary.steps) or "none"
    print(f"demo: requests={stats.requests} ok={stats.ok} errors={stats.errors} "
          f"v2_share={v2:.2f} canary={steps} mtls_connections={canary.mtls_connections}",
          flush=True)
    return code
