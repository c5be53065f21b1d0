"""Run a real `plait sidecar` for a test: build its bootstrap, start it, read its stats.

Why: sidecar tests should say what they configure (three endpoints, a retry policy, a
1 s header deadline) in a few lines, and then talk to the real process over real sockets.

How: the builders below return plain Envoy v3 Bootstrap dicts (the same document a user
writes in YAML); listeners and the admin endpoint use port 0, and the sidecar's ready line
(`plait sidecar ready admin=HOST:PORT listeners=name@HOST:PORT,... workers=N`) says which
ports the kernel chose. `start_sidecar` writes the bootstrap to a temporary file, starts
`python -m plait sidecar` through `plait.testing.procs` and returns a `Sidecar` handle;
`Sidecar.stats()` scrapes /stats/prometheus and parses it with prometheus_client's own
text parser, so the exposition format is checked on every scrape.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Iterable

from plait.testing import procs

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager."
            "v3.HttpConnectionManager")
LIMIT = "envoy.filters.network.connection_limit"
LIMIT_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3."
              "ConnectionLimit")
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http."
                                    "router.v3.Router"}}
READY = re.compile(r"^plait sidecar ready admin=(\S+) listeners=(\S*) workers=(\d+)$")
PLAIT = [sys.executable, "-m", "plait"]


def duration(seconds: float) -> str:
    """A protobuf Duration in its JSON form ("1.5s")."""
    return f"{seconds:g}s"


def address(port: int, host: str = "127.0.0.1") -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


# -- builders ---------------------------------------------------------------------------

def cluster(name: str, endpoints: Iterable, *, lb_policy: str = "ROUND_ROBIN",
            connect_timeout: float = 1.0, **extra) -> dict:
    """A STATIC cluster. `endpoints`: ports on 127.0.0.1, (host, port) pairs, or
    (host, port, weight) triples."""
    lb_endpoints = []
    for ep in endpoints:
        host, port, weight = "127.0.0.1", ep, None
        if isinstance(ep, tuple):
            host, port = ep[0], ep[1]
            weight = ep[2] if len(ep) > 2 else None
        entry: dict = {"endpoint": {"address": address(port, host)}}
        if weight is not None:
            entry["load_balancing_weight"] = weight
        lb_endpoints.append(entry)
    return {"name": name, "type": "STATIC", "lb_policy": lb_policy,
            "connect_timeout": duration(connect_timeout),
            "load_assignment": {"cluster_name": name,
                                "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints
                                else []},
            **extra}


def retry_policy(retry_on: str = "5xx", *, num_retries: int = 1,
                 per_try_timeout: float | None = None, base_interval: float | None = None,
                 retriable_status_codes: Iterable[int] = ()) -> dict:
    out: dict = {"retry_on": retry_on, "num_retries": num_retries}
    if per_try_timeout is not None:
        out["per_try_timeout"] = duration(per_try_timeout)
    if base_interval is not None:
        out["retry_back_off"] = {"base_interval": duration(base_interval)}
    if retriable_status_codes:
        out["retriable_status_codes"] = list(retriable_status_codes)
    return out


def route(cluster: str | None = None, *, prefix: str | None = None, path: str | None = None,
          regex: str | None = None, weighted: dict[str, int] | None = None,
          timeout: float | None = None, retry: dict | None = None,
          headers: list[dict] | None = None, name: str = "") -> dict:
    """One route; the match defaults to prefix "/". Give `cluster` or `weighted`."""
    if path is not None:
        match: dict = {"path": path}
    elif regex is not None:
        match = {"safe_regex": {"regex": regex}}
    else:
        match = {"prefix": prefix if prefix is not None else "/"}
    if headers:
        match["headers"] = headers
    action: dict = ({"weighted_clusters": {"clusters": [{"name": n, "weight": w}
                                                        for n, w in weighted.items()]}}
                    if weighted else {"cluster": cluster})
    if timeout is not None:
        action["timeout"] = duration(timeout)
    if retry is not None:
        action["retry_policy"] = retry
    out = {"match": match, "route": action}
    if name:
        out["name"] = name
    return out


def virtual_host(name: str, domains: list[str], routes: list[dict]) -> dict:
    return {"name": name, "domains": domains, "routes": routes}


def listener(name: str, virtual_hosts: list[dict], *, port: int = 0,
             max_request_headers_kb: int | None = None,
             request_headers_timeout: float | None = None,
             connection_limit: int | None = None, direction: str = "OUTBOUND") -> dict:
    hcm: dict = {"@type": HCM_TYPE, "stat_prefix": name,
                 "route_config": {"name": name, "virtual_hosts": virtual_hosts},
                 "http_filters": [ROUTER]}
    if max_request_headers_kb is not None:
        hcm["max_request_headers_kb"] = max_request_headers_kb
    if request_headers_timeout is not None:
        hcm["request_headers_timeout"] = duration(request_headers_timeout)
    filters = []
    if connection_limit is not None:
        filters.append({"name": LIMIT, "typed_config": {
            "@type": LIMIT_TYPE, "stat_prefix": name, "max_connections": connection_limit}})
    filters.append({"name": HCM, "typed_config": hcm})
    return {"name": name, "traffic_direction": direction, "address": address(port),
            "filter_chains": [{"filters": filters}]}


def bootstrap(*, listeners: list[dict], clusters: list[dict], node: str = "test") -> dict:
    """A whole Bootstrap, admin on 127.0.0.1 port 0."""
    return {"node": {"id": node, "cluster": node},
            "admin": {"address": address(0)},
            "static_resources": {"listeners": listeners, "clusters": clusters}}


def simple(upstream_ports: Iterable[int], **route_options) -> dict:
    """One listener `outbound`, every host and path → cluster `app` on the given ports."""
    return bootstrap(
        listeners=[listener("outbound", [virtual_host("all", ["*"],
                                                      [route("app", **route_options)])])],
        clusters=[cluster("app", upstream_ports)])


# -- the running sidecar --------------------------------------------------------------------

class Metrics:
    """Samples of one scrape, by sample name (`plait_upstream_rq_total`) and labels."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples = [s for f in self.families for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of every sample called `name` whose labels include `labels` (0 if none)."""
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def series(self, name: str) -> list[tuple[dict, float]]:
        return [(s.labels, s.value) for s in self.samples if s.name == name]


class Sidecar:
    def __init__(self, process: procs.Process, match: re.Match, workdir: Path) -> None:
        self.process = process
        self.workdir = workdir
        self.admin = match.group(1)
        self.admin_url = f"http://{self.admin}"
        self.workers = int(match.group(3))
        self.listeners: dict[str, tuple[str, int]] = {}
        for item in filter(None, match.group(2).split(",")):
            name, _, hostport = item.partition("@")
            host, _, port = hostport.rpartition(":")
            self.listeners[name] = (host, int(port))

    @property
    def pid(self) -> int:
        return self.process.pid

    def listener(self, name: str = "outbound") -> tuple[str, int]:
        return self.listeners[name]

    def url(self, path: str = "/", listener: str = "outbound") -> str:
        host, port = self.listeners[listener]
        return f"http://{host}:{port}{path}"

    def admin_request(self, path: str, *, method: str = "GET",
                      timeout: float = 10.0) -> tuple[int, bytes]:
        """(status, body) of an admin request."""
        req = urllib.request.Request(self.admin_url + path, method=method,
                                     data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stats(self) -> Metrics:
        status, body = self.admin_request("/stats/prometheus")
        assert status == 200, body
        return Metrics(body.decode())

    def config_dump(self) -> dict:
        return json.loads(self.admin_request("/config_dump")[1])

    def stop(self, *, grace: float = 5.0) -> int:
        code = self.process.stop(grace=grace)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self) -> "Sidecar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_bootstrap(config: dict, directory: str | os.PathLike) -> Path:
    path = Path(directory) / "bootstrap.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def start_sidecar(config: dict, *, concurrency: int = 1, access_log: str = "off",
                  extra_args: Iterable[str] = (), timeout: float = 20.0) -> Sidecar:
    """Start `plait sidecar` with `config` and return once it printed its ready line.

    `access_log`: "off", "-" (stdout, readable through `.process.stdout_lines()`) or a
    file path. Raises procs.ProcessFailed with the sidecar's output if it does not start."""
    workdir = Path(tempfile.mkdtemp(prefix="plait-sidecar-"))
    path = write_bootstrap(config, workdir)
    argv = [*PLAIT, "sidecar", "--bootstrap", str(path), "--concurrency", str(concurrency),
            "--access-log", access_log, *extra_args]
    try:
        process, match = procs.start(argv, ready=READY, timeout=timeout, name="plait sidecar")
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return Sidecar(process, match, workdir)


# -- upstreams ------------------------------------------------------------------------------

UPSTREAM_READY = re.compile(r"^upstream ready port=(\d+)$")


class Upstream:
    """A running `plait.testing.upstream` process."""

    def __init__(self, process: procs.Process, port: int, name: str) -> None:
        self.process = process
        self.port = port
        self.name = name

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self) -> dict:
        """The upstream's own /count: requests served and connections accepted."""
        with urllib.request.urlopen(self.url("/count"), timeout=5) as resp:
            return json.loads(resp.read())

    def stop(self) -> int:
        return self.process.stop(grace=2.0)


def start_upstream(name: str = "upstream", *, timeout: float = 15.0) -> Upstream:
    process, match = procs.start(
        [sys.executable, "-m", "plait.testing.upstream", "--port", "0", "--name", name],
        ready=UPSTREAM_READY, timeout=timeout, name=f"upstream {name}")
    return Upstream(process, int(match.group(1)), name)


@contextlib.contextmanager
def upstreams(*names: str):
    """Start one upstream per name; yield {name: Upstream}; stop them all at exit."""
    started: dict[str, Upstream] = {}
    try:
        for name in names:
            started[name] = start_upstream(name)
        yield started
    finally:
        for up in started.values():
            up.stop()
