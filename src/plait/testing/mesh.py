"""A whole mesh on loopback for end-to-end tests: one `plait control`, apps with sidecars.

Why: what a mesh user notices (a new instance is called within a second, a canary gets
its share, a dead control plane changes nothing) happens only when the real control
plane, real sidecars and real apps run together. Tests of that should read like the
scenario, not like process plumbing.

How: `Mesh(workdir)` starts `plait control` (ports 0, `plait.testing.control`).
`mesh.add_app("pricing", instance="pricing-v1", labels={"version": "v1"})` starts a
scriptable upstream (`plait.testing.upstream`, named after the instance, so every answer
says who served it) and a `plait sidecar` in dynamic mode beside it, with the flags a user
types. The sidecar's listener ports come from xDS and must be fixed numbers, so they are
allocated here by binding port 0 and closing; its admin port is 0 and read from the
ready line. Each start waits for the ready line (`plait.testing.procs`); each later
change is awaited with `wait_until`, a condition polled against a deadline.
`app.call("pricing")` is the app calling its own sidecar's outbound listener with
`Host: pricing`. `mesh.close()` stops sidecars, then apps, then the control plane, each by
its PID; it is safe after a failure half-way and safe to call twice.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Callable, TypeVar

import httpx

from plait.testing import procs
from plait.testing.control import PLAIT, ControlPlane, cli_output, run_cli, start_control
from plait.testing.sidecar import READY as SIDECAR_READY
from plait.testing.sidecar import Metrics, Sidecar, Upstream, start_upstream

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just called free (bound to port 0, then closed). Another process
    can take it before it is used; `App.start_sidecar` then fails, as the sidecar's ready
    line lacks the listener it could not bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T], *, timeout: float, what: str,
               interval: float = 0.02) -> T:
    """Poll `condition()` until it returns something truthy; return that. Raises
    AssertionError naming `what` (and the last exception seen) once `timeout` passes."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, HTTPException, ValueError, KeyError, httpx.HTTPError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"not within {timeout:g}s: {what}{detail}")
        time.sleep(interval)


def binomial_tolerance(n: int, p: float, sigmas: float = 4.0) -> float:
    """How far a count of successes in `n` trials of probability `p` may stray from n*p
    (`sigmas` standard deviations, plus one for the count being whole)."""
    return sigmas * math.sqrt(n * p * (1.0 - p)) + 1.0


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def served_by(self) -> str:
        """The name of the upstream instance that answered ("" for a sidecar's own reply)."""
        return self.headers.get("x-upstream-name", "")

    @property
    def failure(self) -> str:
        """"<status>", or "<status reason>" for a sidecar's own reply: how a failed call
        is told apart in a count."""
        reason = self.headers.get("x-plait-error")
        return f"<{self.status} {reason}>" if reason else f"<{self.status}>"

    def json(self):
        return json.loads(self.body)


@dataclass
class App:
    """One app instance (a testing upstream) and the sidecar beside it."""

    mesh: Mesh
    service: str
    instance: str  # node id, registry instance id and the upstream's --name
    labels: dict[str, str]
    upstream: Upstream
    inbound_port: int
    outbound_port: int
    cache_dir: Path
    concurrency: int = 1
    lease_ttl: float | None = None
    dependencies: tuple[str, ...] = ()
    initial_fetch_timeout: float = 3.0
    sidecar: Sidecar | None = None
    starts: int = 0
    _connection: HTTPConnection | None = field(default=None, repr=False)

    # -- the sidecar --------------------------------------------------------------------

    def argv(self) -> list[str]:
        cp = self.mesh.control
        argv = [*PLAIT, "sidecar", "--xds", cp.xds_address, "--registry", cp.api_url,
                "--app", self.service, "--app-port", str(self.upstream.port),
                "--inbound-port", str(self.inbound_port),
                "--outbound-port", str(self.outbound_port), "--admin-port", "0",
                "--node-id", self.instance, "--cache-dir", str(self.cache_dir),
                "--initial-fetch-timeout", f"{self.initial_fetch_timeout:g}",
                "--concurrency", str(self.concurrency),
                "--access-log", str(self.access_log_path())]
        if self.labels:
            argv += ["--labels", ",".join(f"{k}={v}" for k, v in self.labels.items())]
        if self.dependencies:
            argv += ["--dependencies", ",".join(self.dependencies)]
        if self.lease_ttl is not None:
            argv += ["--lease-ttl", f"{self.lease_ttl:g}"]
        return argv

    def access_log_path(self) -> Path:
        """Where this instance's sidecar writes its access log (kept after it stops, for
        a failing test's post-mortem)."""
        return self.mesh.workdir / self.instance / "access.log"

    def access_log(self) -> list[dict]:
        """The access log lines written so far (each worker flushes every 0.5 s)."""
        try:
            text = self.access_log_path().read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # two workers share the file; a torn line is not worth failing on
        return out

    def start_sidecar(self, *, timeout: float = 20.0) -> Sidecar:
        """Start the sidecar and return once it printed its ready line with both of its
        listeners bound. Raises procs.ProcessFailed with its output otherwise."""
        if self.sidecar is not None and self.sidecar.process.returncode is None:
            raise RuntimeError(f"sidecar {self.instance} is already running")
        self.starts += 1
        workdir = self.mesh.workdir / self.instance / f"run-{self.starts}"
        workdir.mkdir(parents=True)  # the parent holds the cache and the access log
        process, match = procs.start(self.argv(), ready=SIDECAR_READY, timeout=timeout,
                                     name=f"sidecar {self.instance}")
        self.sidecar = Sidecar(process, match, workdir)
        self.mesh._started.append(self.sidecar)
        bound = {name: port for name, (_, port) in self.sidecar.listeners.items()}
        wanted = {"outbound": self.outbound_port, "inbound": self.inbound_port}
        if bound != wanted:
            self.sidecar.stop(grace=1.0)
            raise procs.ProcessFailed(
                f"sidecar {self.instance} listens on {bound}, not {wanted}; its last "
                f"output:\n{process.last_output()}")
        return self.sidecar

    def stop_sidecar(self, *, grace: float = 5.0) -> int:
        """Stop the sidecar cleanly (SIGTERM: it drains and deregisters)."""
        self.close_connection()
        return self.sidecar.stop(grace=grace)

    def kill_sidecar(self) -> int:
        """SIGKILL the sidecar's main process: no deregistration, no goodbye. Its worker
        processes follow it (they die with their parent)."""
        self.close_connection()
        process = self.sidecar.process
        process.signal(signal.SIGKILL)
        return process.wait(10.0)

    @property
    def running(self) -> bool:
        """Whether the sidecar is up (started and not exited)."""
        return self.sidecar is not None and self.sidecar.process.returncode is None

    @property
    def admin(self) -> Sidecar:
        assert self.sidecar is not None, f"{self.instance} has no sidecar"
        return self.sidecar

    def config_dump(self) -> dict:
        return self.admin.config_dump()

    def stats(self) -> Metrics:
        return self.admin.stats()

    def endpoints(self) -> dict[str, list[str]]:
        """Cluster name → its endpoints ("host:port") in the config the sidecar serves."""
        return {c["name"]: c["endpoints"] for c in self.config_dump()["clusters"]}

    def service_endpoints(self, service: str) -> set[str]:
        """Every endpoint of every cluster for `service` in this sidecar's config."""
        return {ep for name, eps in self.endpoints().items()
                if name.startswith("outbound|") and name.rsplit("|", 1)[-1] == service
                for ep in eps}

    def endpoint_priorities(self, service: str) -> dict[str, int]:
        """This sidecar's priority for each endpoint of `service` (admin /clusters):
        "host:port" → 0 for the first choice, higher for failover."""
        return self._endpoint_field(service, "priority")

    def endpoint_health(self, service: str) -> dict[str, str]:
        """This sidecar's view of each endpoint of `service` (admin /clusters): "host:port"
        → "healthy", "failed_active_hc" or "ejected"."""
        return self._endpoint_field(service, "health")

    def _endpoint_field(self, service: str, field: str) -> dict:
        """"host:port" → `field` of each endpoint of `service` in admin /clusters."""
        _, body = self.admin.admin_request("/clusters?format=json")
        return {e["address"]: e[field] for c in json.loads(body)["clusters"]
                if c["name"].startswith("outbound|") and c["name"].endswith(f"|{service}")
                for e in c["endpoints"]}

    def xds(self) -> dict:
        return self.config_dump()["xds"]

    def routes(self, service: str, listener: str = "outbound") -> list[str] | None:
        """Names of the routes for calls to `service` in the config the sidecar serves,
        or None when it has no virtual host for `service`."""
        for lis in self.config_dump()["listeners"]:
            if lis["name"] == listener:
                for vhost in lis["virtual_hosts"]:
                    if service in vhost["domains"]:
                        return vhost["routes"]
        return None

    def route_version(self) -> str:
        """The RouteConfiguration version of the config in force (the main process's)."""
        return self.config_dump()["version"].split("/")[1]

    # -- calling through the mesh ----------------------------------------------------------

    def call(self, service: str, path: str = "/echo", *, method: str = "GET",
             headers: dict[str, str] | None = None, timeout: float = 5.0) -> Reply:
        """One request from this app to `service`, through its own sidecar's outbound
        listener, on a kept-alive connection (reopened after any failure)."""
        conn = self._connection
        if conn is None:
            conn = self._connection = HTTPConnection("127.0.0.1", self.outbound_port,
                                                     timeout=timeout)
        try:
            conn.request(method, path, headers={"Host": service, **(headers or {})})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, HTTPException):
            self.close_connection()
            raise
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
        if resp.will_close:
            self.close_connection()
        return reply

    def served_by(self, service: str, n: int, path: str = "/echo") -> Counter:
        """Who answered `n` calls to `service`; failed calls count under "<status>", or
        "<status reason>" when a sidecar answered itself (its `x-plait-error`)."""
        out: Counter = Counter()
        for _ in range(n):
            reply = self.call(service, path)
            out[reply.served_by if reply.status == 200 else reply.failure] += 1
        return out

    def close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class Mesh:
    """A control plane and apps on loopback. Use `with Mesh(dir) as mesh:` or a fixture
    that calls `close()`."""

    def __init__(self, workdir: str | os.PathLike, *, lease_ttl: float = 3.0) -> None:
        """`lease_ttl`: what sidecars of this mesh register with unless told otherwise
        (shorter than the default 10 s, so a restarted control plane is re-populated
        within a second: heartbeats go every third of it)."""
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "control"
        self.lease_ttl = lease_ttl
        self.apps: dict[str, App] = {}
        self._started: list[Sidecar] = []
        self._upstreams: list[Upstream] = []
        self._controls: list[ControlPlane] = []
        self._api: httpx.Client | None = None
        self.control: ControlPlane = self.start_control()

    # -- the control plane ----------------------------------------------------------------

    def start_control(self, *, same_ports: bool = False) -> ControlPlane:
        """Start `plait control` on this mesh's data directory; with `same_ports`, on the
        ports of the one before (what sidecars are configured with)."""
        ports = {}
        if same_ports:
            ports = {"api_port": int(self.control.api_url.rsplit(":", 1)[1]),
                     "xds_port": int(self.control.xds_address.rsplit(":", 1)[1])}
        control = start_control(self.data_dir, **ports)
        self._controls.append(control)
        self.control = control
        if self._api is not None:
            self._api.close()
        self._api = httpx.Client(base_url=control.api_url, timeout=10)
        return control

    def kill_control(self) -> None:
        """SIGKILL the control plane (a crash: nothing is closed politely)."""
        self.control.process.signal(signal.SIGKILL)
        self.control.process.wait(10.0)
        self.control.stop()  # collects its pipes

    def cli(self, *args: str, stdin: str | None = None):
        """`plait ARGS...` against this mesh's control plane (a CompletedProcess)."""
        return run_cli(self.control, *args, stdin=stdin)

    def apply(self, text: str) -> str:
        """`plait apply -f -` with `text`; returns its output, fails the test on an error."""
        return cli_output(self.control, "apply", "-f", "-", stdin=text)

    def apply_api(self, text: str) -> list[dict]:
        """`POST /api/v1/apply` with `text` (faster than the CLI); returns what was applied."""
        done = self.api("POST", "/api/v1/apply", content=text.encode(),
                        headers={"content-type": "application/yaml"})
        assert done.status_code == 200, f"apply failed: {done.text}"
        return done.json()["applied"]

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return self._api.request(method, path, **kwargs)

    def delete_all(self) -> None:
        """Delete every VirtualService, DestinationRule and ServiceEntry (through the API)."""
        for kind in ("VirtualService", "DestinationRule", "ServiceEntry"):
            for item in self.api("GET", f"/api/v1/resources/{kind}").json()["items"]:
                gone = self.api("DELETE", f"/api/v1/resources/{kind}/{item['namespace']}/"
                                          f"{item['name']}")
                assert gone.status_code == 200, gone.text

    def instances(self, service: str) -> dict[str, dict]:
        """Registered instances of `service` by instance id, as the registry API lists them."""
        services = self.api("GET", "/api/v1/registry/services").json()["services"]
        return {i["instanceId"]: i for s in services if s["name"] == service
                for i in s["instances"]}

    def proxies(self) -> dict[str, dict]:
        """Connected proxies by node id (`GET /api/v1/proxies`)."""
        return {p["node_id"]: p for p in self.api("GET", "/api/v1/proxies").json()["proxies"]}

    # -- apps -----------------------------------------------------------------------------

    def add_app(self, service: str, *, instance: str = "", labels: dict[str, str] | None = None,
                concurrency: int = 1, lease_ttl: float | None = None,
                dependencies: tuple[str, ...] = (), initial_fetch_timeout: float = 3.0,
                sidecar: bool = True) -> App:
        """Start an app instance of `service` and (unless `sidecar=False`) its sidecar.
        `instance` defaults to the service name and must be unique in the mesh."""
        instance = instance or service
        if instance in self.apps:
            raise ValueError(f"instance {instance!r} exists already")
        upstream = start_upstream(instance)
        self._upstreams.append(upstream)
        inbound, outbound = _two_free_ports()
        app = App(mesh=self, service=service, instance=instance, labels=dict(labels or {}),
                  upstream=upstream, inbound_port=inbound, outbound_port=outbound,
                  cache_dir=self.workdir / instance / "cache", concurrency=concurrency,
                  lease_ttl=self.lease_ttl if lease_ttl is None else lease_ttl,
                  dependencies=tuple(dependencies),
                  initial_fetch_timeout=initial_fetch_timeout)
        self.apps[instance] = app
        if sidecar:
            app.start_sidecar()
        return app

    def wait_registered(self, service: str, instances: set[str], *, timeout: float = 5.0):
        """Wait until exactly `instances` of `service` are in the registry."""
        wait_until(lambda: set(self.instances(service)) == instances, timeout=timeout,
                   what=f"{service} registered as exactly {sorted(instances)}")

    def wait_routable(self, caller: App, service: str, instances: set[str], *,
                      timeout: float = 5.0, sample: int = 0) -> None:
        """Wait until `caller`'s sidecar knows exactly the endpoints of `instances` for
        `service` and a call reaches `service`."""
        ports = {f"127.0.0.1:{self.apps[i].inbound_port}" for i in instances}
        try:
            wait_until(lambda: caller.service_endpoints(service) == ports, timeout=timeout,
                       what=f"{caller.instance} sees endpoints {sorted(ports)} for {service}")
            wait_until(lambda: caller.call(service).status == 200, timeout=timeout,
                       what=f"{caller.instance} reaches {service}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None

    def describe(self) -> str:
        """The last output and access log lines of every sidecar: for failure messages."""
        parts = []
        for app in self.apps.values():
            if app.sidecar is None:
                continue
            tail = [json.dumps(e) for e in app.access_log()[-10:]]
            parts.append(f"--- {app.instance} (inbound {app.inbound_port}, outbound "
                         f"{app.outbound_port}, app {app.upstream.port}):\n"
                         f"{app.sidecar.process.last_output()}\naccess log:\n  "
                         + "\n  ".join(tail))
        return "\n".join(parts)

    # -- the end ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop sidecars (newest first), then apps, then control planes; by PID, each
        SIGTERM then SIGKILL. Safe to call twice."""
        for app in self.apps.values():
            app.close_connection()
        for sidecar in reversed(self._started):
            sidecar.stop(grace=3.0)
        for upstream in reversed(self._upstreams):
            upstream.stop()
        for control in reversed(self._controls):
            control.stop(grace=5.0)
        if self._api is not None:
            self._api.close()
            self._api = None

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _two_free_ports() -> tuple[int, int]:
    # Both sockets are held at once so the two numbers differ.
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return a.getsockname()[1], b.getsockname()[1]


def listener_owner(port: int, peer_port: int, pids: list[int]) -> int | None:
    """The PID among `pids` that holds the accepted socket 127.0.0.1:port ← 127.0.0.1:peer_port
    (which worker of a sidecar took a connection). Linux only: /proc/net/tcp and fds."""
    local = f"0100007F:{port:04X}"
    remote = f"0100007F:{peer_port:04X}"
    inode = None
    with open("/proc/net/tcp", encoding="ascii") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                inode = fields[9]
                break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def process_group(pgid: int) -> list[int]:
    """PIDs of every live process in group `pgid` (a sidecar and its forked workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces) start at the last ')'.
        rest = stat[stat.rindex(")") + 2:].split()
        if int(rest[2]) == pgid and rest[0] != "Z":
            out.append(int(entry))
    return sorted(out)

