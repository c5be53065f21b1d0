"""Control plane push: how long a change takes to reach every proxy it affects.

Three processes, so each is measured on its own: the control plane (pinned to the first
CPU), N simulated proxies in one asyncio process (pinned to the second CPU; each proxy
is its own ADS stream on its own TCP connection, subscribes like a sidecar — wildcard
CDS and LDS, then EDS and RDS by name — and ACKs every response at once), and this
coordinator, which makes changes and collects the numbers.

The mesh: S services (default 50) plus one `shared` service every proxy calls; each
service has 4 instances (v1/v2 × two zones), a DestinationRule with subsets v1/v2 and a
VirtualService splitting 90/10. Proxy i belongs to app `svc-(i mod S)` and calls
`shared` and the next four services, so a change to one service affects 8% of proxies
and a change to `shared` affects all of them.

Two control planes are measured in turn:
- view:  the push server on an in-memory mesh view, changed directly (the push side alone);
- api:   a real `plait control`, changed through its REST API (store, registry, view, push).

Latency of one change = (time the proxy wrote its ACK of the response carrying the change)
- (time just before the change was made), on the shared monotonic clock, for every
affected proxy; it includes the debounce (100 ms of quiet). The last line:

    push: proxies=N p50_ms=.. p99_ms=.. rss_mb=..

pools the samples of every change in both modes; rss_mb is the larger peak RSS of the two
control planes. Method and recorded numbers: docs/performance.md, "Control plane push".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import Procs, _child_setup, cpu_plan  # noqa: E402

DEPS_PER_APP = 4
SHARED = "shared"


# --- the mesh, shared by every role -------------------------------------------------
def services(count: int) -> list[str]:
    return [f"svc-{i:02d}" for i in range(count)] + [SHARED]


def app_of(proxy: int, count: int) -> int:
    return proxy % count


def dependencies(proxy: int, count: int) -> list[str]:
    app = app_of(proxy, count)
    return [SHARED] + [f"svc-{(app + k) % count:02d}" for k in range(1, DEPS_PER_APP + 1)]


def affected(service: str, proxies: int, count: int) -> list[int]:
    return [p for p in range(proxies) if service in dependencies(p, count)]


def instance_docs(count: int) -> list[dict]:
    out = []
    for n, service in enumerate(services(count)):
        for k, (version, zone) in enumerate([("v1", "a"), ("v1", "b"), ("v2", "a"), ("v2", "b")]):
            out.append({"service": service, "address": f"10.{n}.0.{k + 1}", "port": 8080,
                        "labels": {"version": version, "zone": zone}, "ttl": 3600})
    return out


def rule_docs(service: str, v1: int = 90) -> list[dict]:
    meta = {"name": service}
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": meta,
         "spec": {"host": service, "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                               {"name": "v2", "labels": {"version": "v2"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta,
         "spec": {"hosts": [service], "http": [{"route": [
             {"destination": {"host": service, "subset": "v1"}, "weight": v1},
             {"destination": {"host": service, "subset": "v2"}, "weight": 100 - v1}]}]}},
    ]


# --- role: the push server on an in-memory view ----------------------------------------
async def serve_view(count: int) -> None:
    from plait.controlplane.push import start_push
    from plait.testing.meshview import FakeMeshView

    view = FakeMeshView()
    for doc in instance_docs(count):
        view.register(doc["service"], doc["address"], doc["port"], **doc["labels"])
    for service in services(count):
        view.apply(*rule_docs(service))
    loop = asyncio.get_running_loop()
    async with start_push(view, "127.0.0.1", 0) as push:
        print(f"ready port={push.port}", flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            words = line.split()
            if words[0] == "status":  # one proxy's row, for looking into a missing ACK
                rows = [r for r in push.proxy_status() if r["node_id"] == words[1]]
                print(json.dumps(rows), flush=True)
                continue
            if words[0] == "weight":
                view.apply(*rule_docs(words[1], int(words[2]))[1:])
            elif words[0] == "endpoint":
                view.register(words[1], f"10.200.{int(words[2]) // 250}.{int(words[2]) % 250 + 1}",
                              8080, version="v1", zone="a")
            print(json.dumps(push.counters()), flush=True)


# --- role: N simulated sidecars --------------------------------------------------------
class SimProxy:
    def __init__(self, number: int, count: int, port: int) -> None:
        self.number, self.count, self.port = number, count, port
        self.acked: dict[str, float] = {}  # type URL → monotonic time of the last ACK
        self.synced = asyncio.Event()

    async def run(self) -> None:
        import grpc
        from envoy.config.cluster.v3 import cluster_pb2

        from plait.testing.ads_client import AdsClient, make_node
        from plait.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

        options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per proxy
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options) as ch:
            client = AdsClient(ch, make_node(
                f"proxy-{self.number}", app=f"svc-{app_of(self.number, self.count):02d}",
                dependencies=dependencies(self.number, self.count)))
            await client.send(CLUSTER, [])
            await client.send(LISTENER, [])
            while True:
                response = await client.recv(timeout=None)
                await client.ack(response)
                self.acked[response.type_url] = time.monotonic()
                if response.type_url == CLUSTER:
                    names = []
                    for packed in response.resources:
                        cluster = cluster_pb2.Cluster.FromString(packed.value)
                        if cluster.type == cluster_pb2.Cluster.EDS:
                            names.append(cluster.name)
                    if sorted(names) != sorted(client.names.get(ENDPOINT, [])):
                        await client.send(ENDPOINT, names)
                elif response.type_url == LISTENER and ROUTE not in client.names:
                    await client.send(ROUTE, ["outbound"])
                if len(self.acked) == 4:
                    self.synced.set()


async def run_clients(proxies: int, count: int, port: int) -> None:
    loop = asyncio.get_running_loop()
    fleet = [SimProxy(n, count, port) for n in range(proxies)]
    async with asyncio.TaskGroup() as tasks:
        started = time.monotonic()
        runners = [tasks.create_task(p.run()) for p in fleet]
        await asyncio.wait_for(asyncio.gather(*(p.synced.wait() for p in fleet)), 120)
        print(json.dumps({"synced_s": round(time.monotonic() - started, 3)}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            t0, type_url, service = float(line.split()[0]), line.split()[1], line.split()[2]
            waiting = [fleet[p] for p in affected(service, proxies, count)]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(
                    p.acked.get(type_url, 0) <= t0 for p in waiting):
                await asyncio.sleep(0.005)  # how often to look; the times are exact
            done = [p.acked[type_url] - t0 for p in waiting if p.acked.get(type_url, 0) > t0]
            late = [p.number for p in waiting if p.acked.get(type_url, 0) <= t0]
            print(json.dumps({"ms": [round(d * 1000, 3) for d in done],
                              "missing": len(late), "late": late[:3]}), flush=True)
        for runner in runners:
            runner.cancel()


# --- coordinator -------------------------------------------------------------------------
class Child:
    """A role process spoken to by lines on stdin/stdout; stopped by PID in `stop`."""

    def __init__(self, argv: list[str], cpus: set[int]) -> None:
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, start_new_session=True,
                                      preexec_fn=_child_setup(cpus))

    def ask(self, line: str | None = None) -> str:
        if line is not None:
            self.popen.stdin.write(line + "\n")
            self.popen.stdin.flush()
        answer = self.popen.stdout.readline()
        if not answer:
            raise RuntimeError(f"{self.popen.args[2:5]} exited ({self.popen.wait()})")
        return answer.strip()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_busy_seconds(cpu: int) -> float:
    """Busy time of one CPU so far, whoever used it (/proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return 0.0


def measure(mode: str, change, clients: Child, server_pid: int, args, status=None
            ) -> list[tuple]:
    """Make every change of the plan; returns rows of (scenario, latencies ms, missing,
    control plane CPU ms per change, proxies' CPU ms per change, share of the control
    plane's core taken by other processes)."""
    core = min(os.sched_getaffinity(server_pid))
    from plait.xds.resources import ENDPOINT, ROUTE

    rows = []
    plan = [("route weight, one service", ROUTE, "svc-07", "weight"),
            ("new endpoint, one service", ENDPOINT, "svc-07", "endpoint"),
            ("route weight, shared", ROUTE, SHARED, "weight"),
            ("new endpoint, shared", ENDPOINT, SHARED, "endpoint")]
    serial = 0
    for title, type_url, service, kind in plan:
        samples: list[float] = []
        missing = 0
        cpu = (cpu_seconds(server_pid), cpu_seconds(clients.popen.pid))
        busy, started = core_busy_seconds(core), time.monotonic()
        for n in range(args.rounds):
            serial += 1
            t0 = time.monotonic()
            change(kind, service, 80 if n % 2 else 70, serial)
            result = json.loads(clients.ask(f"{t0} {type_url} {service}"))
            if result["late"] and os.environ.get("PUSH_BENCH_DEBUG") and status is not None:
                print(f"late proxy-{result['late'][0]}: {status(result['late'][0])}")
            samples += result["ms"]
            missing += result["missing"]
        server_s = cpu_seconds(server_pid) - cpu[0]
        clients_s = cpu_seconds(clients.popen.pid) - cpu[1]
        others = max(0.0, core_busy_seconds(core) - busy - server_s) / (time.monotonic() - started)
        rows.append((f"{mode}: {title}", samples, missing, server_s * 1000 / args.rounds,
                     clients_s * 1000 / args.rounds, others))
    return rows


def run_view(args, cpus) -> tuple[list, float, float]:
    server = Child([sys.executable, __file__, "--role", "server", "--services",
                    str(args.services)], cpus[0])
    clients = None
    try:
        port = int(server.ask().split("port=")[1])
        clients = Child([sys.executable, __file__, "--role", "clients", "--port", str(port),
                         "--proxies", str(args.proxies), "--services", str(args.services)],
                        cpus[1])
        synced = json.loads(clients.ask())["synced_s"]

        def change(kind, service, weight, serial):
            server.ask(f"{kind} {service} {weight if kind == 'weight' else serial}")

        rows = measure("view", change, clients, server.popen.pid, args,
                       status=lambda n: server.ask(f"status proxy-{n}"))
        return rows, synced, rss_mb(server.popen.pid)[1]
    finally:
        for child in (clients, server):
            if child is not None:
                child.stop()


def run_api(args, cpus, workdir: Path) -> tuple[list, float, float, float]:
    import httpx

    procs = Procs(workdir)
    clients = None
    try:
        argv = [sys.executable, "-m", "plait", "control", "--data-dir", str(workdir / "data"),
                "--api-port", "0", "--xds-port", "0"]
        usage = subprocess.run([*argv[:4], "--help"], capture_output=True, text=True).stdout
        if "--insecure-dev" in usage:  # API authentication is measured elsewhere
            argv.append("--insecure-dev")
        control = procs.start("control", argv, cpus=cpus[0], ready_prefix="plait control ready")
        ready = procs.wait_line(control, 30)
        api_at = ready.split("api=")[1].split()[0]
        xds_port = int(ready.split("xds=")[1].split(":")[-1])
        api = httpx.Client(base_url=f"http://{api_at}", timeout=10)
        started = time.monotonic()
        docs = instance_docs(args.services)
        for doc in docs:  # one client, one request at a time: the registry's own pace
            api.post("/api/v1/registry/instances", json=doc).raise_for_status()
        per_second = len(docs) / (time.monotonic() - started)
        rules = [d for s in services(args.services) for d in rule_docs(s)]
        api.post("/api/v1/apply", content="\n---\n".join(json.dumps(d) for d in rules)
                 ).raise_for_status()
        clients = Child([sys.executable, __file__, "--role", "clients", "--port", str(xds_port),
                         "--proxies", str(args.proxies), "--services", str(args.services)],
                        cpus[1])
        synced = json.loads(clients.ask())["synced_s"]

        def change(kind, service, weight, serial):
            if kind == "weight":
                api.post("/api/v1/apply", content=json.dumps(rule_docs(service, weight)[1])
                         ).raise_for_status()
            else:
                api.post("/api/v1/registry/instances", json={
                    "service": service, "address": f"10.201.{serial // 250}.{serial % 250 + 1}",
                    "port": 8080, "labels": {"version": "v1", "zone": "a"}, "ttl": 3600,
                }).raise_for_status()

        rows = measure("api", change, clients, control.pid, args)
        hwm = rss_mb(control.pid)[1]
        api.close()
        return rows, synced, hwm, per_second
    finally:
        if clients is not None:
            clients.stop()
        procs.stop_all()


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxies", type=int, default=1000)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="changes per scenario")
    parser.add_argument("--mode", choices=("both", "view", "api"), default="both")
    parser.add_argument("--role", choices=("server", "clients"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        if args.role == "server":
            import uvloop  # as `plait control` runs

            uvloop.run(serve_view(args.services))
        else:
            asyncio.run(run_clients(args.proxies, args.services, args.port))
        return 0

    from rich.console import Console
    from rich.table import Table

    cpus = cpu_plan()
    rows, notes, peaks = [], [], []
    if args.mode in ("both", "view"):
        found, synced, hwm = run_view(args, cpus)
        rows += found
        peaks.append(hwm)
        notes.append(f"view: {args.proxies} proxies synced from scratch in {synced:.2f} s; "
                     f"push server peak RSS {hwm:.1f} MB")
    if args.mode in ("both", "api"):
        with tempfile.TemporaryDirectory(prefix="plait-bench-push-") as tmp:
            found, synced, hwm, per_second = run_api(args, cpus, Path(tmp))
        rows += found
        peaks.append(hwm)
        notes.append(f"api: {args.proxies} proxies synced in {synced:.2f} s; plait control "
                     f"peak RSS {hwm:.1f} MB; registrations {per_second:.0f}/s "
                     f"(one client, sequential REST calls)")
    table = Table(title=f"push latency, change → ACK (ms), {args.proxies} proxies, "
                        f"{args.services + 1} services, {args.rounds} changes each")
    for column in ("scenario", "samples", "missing", "p50", "p99", "max", "cp cpu/change",
                   "proxies cpu/change", "cp core to others"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    pooled = []
    for title, samples, missing, server_ms, clients_ms, others in rows:
        pooled += samples
        table.add_row(title, str(len(samples)), str(missing), f"{percentile(samples, .5):.1f}",
                      f"{percentile(samples, .99):.1f}", f"{max(samples, default=0):.1f}",
                      f"{server_ms:.0f} ms", f"{clients_ms:.0f} ms", f"{others:.0%}")
    console = Console(width=150)
    console.print(table)
    for note in notes:
        console.print(note)
    console.print(f"cpus: control plane {sorted(cpus[0])}, proxies {sorted(cpus[1])}; "
                  f"load average {os.getloadavg()[0]:.2f}")
    print(f"push: proxies={args.proxies} p50_ms={percentile(pooled, .5):.1f} "
          f"p99_ms={percentile(pooled, .99):.1f} rss_mb={max(peaks):.1f}")
    return 0 if all(row[2] == 0 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
