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
FAULT = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
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
    lb_endpoints = [_lb_endpoint(ep) for ep in endpoints]
    return {"name": name, "type": "STATIC", "lb_policy": lb_policy,
            "connect_timeout": duration(connect_timeout),
            "load_assignment": {"cluster_name": name,
                                "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints
                                else []},
            **extra}


def _lb_endpoint(ep) -> dict:
    host, port, weight = "127.0.0.1", ep, None
    if isinstance(ep, tuple):
        host, port = ep[0], ep[1]
        weight = ep[2] if len(ep) > 2 else None
    entry: dict = {"endpoint": {"address": address(port, host)}}
    if weight is not None:
        entry["load_balancing_weight"] = weight
    return entry


def cluster_by_priority(name: str, levels: Iterable[Iterable], **options) -> dict:
    """A STATIC cluster with one locality per priority: `levels[0]` holds the endpoints of
    priority 0 (used first), `levels[1]` those of priority 1, ... (endpoints as in
    `cluster`). Other options as for `cluster`."""
    out = cluster(name, (), **options)
    out["load_assignment"]["endpoints"] = [
        {"priority": i, "lb_endpoints": [_lb_endpoint(ep) for ep in level]}
        for i, level in enumerate(levels)]
    return out


def outlier_detection(*, consecutive_5xx: int | None = None,
                      consecutive_gateway_failure: int | None = None,
                      base_ejection_time: float | None = None,
                      max_ejection_time: float | None = None,
                      max_ejection_percent: int | None = None,
                      interval: float | None = None, **failure_percentage: int) -> dict:
    """A cluster's `outlier_detection`; unset fields keep Envoy's defaults.
    `failure_percentage`: Envoy's `failure_percentage_*` and
    `enforcing_failure_percentage` fields, by name."""
    out: dict = {}
    for key, value in (("consecutive_5xx", consecutive_5xx),
                       ("consecutive_gateway_failure", consecutive_gateway_failure),
                       ("max_ejection_percent", max_ejection_percent),
                       *failure_percentage.items()):
        if value is not None:
            out[key] = value
    for key, value in (("base_ejection_time", base_ejection_time),
                       ("max_ejection_time", max_ejection_time), ("interval", interval)):
        if value is not None:
            out[key] = duration(value)
    return out


def failure_rate_metadata(*, ratio: float | None = None, window: float | None = None) -> dict:
    """A cluster's `metadata` carrying the failure-rate rule's ratio and window, which
    Envoy's outlier_detection has no fields for."""
    meta: dict = {}
    if ratio is not None:
        meta["failureRateRatio"] = ratio
    if window is not None:
        meta["failureRateWindow"] = duration(window)
    return {"filter_metadata": {"plait.outlier": meta}}


def retry_budget(*, budget_percent: float | None = None,
                 min_retry_concurrency: int | None = None) -> dict:
    """A cluster's `circuit_breakers` holding one threshold with a `retry_budget`."""
    budget: dict = {}
    if budget_percent is not None:
        budget["budget_percent"] = {"value": budget_percent}
    if min_retry_concurrency is not None:
        budget["min_retry_concurrency"] = min_retry_concurrency
    return {"thresholds": [{"retry_budget": budget}]}


def retry_policy(retry_on: str = "5xx", *, num_retries: int = 1,
                 per_try_timeout: float | None = None, base_interval: float | None = None,
                 retriable_status_codes: Iterable[int] = (), **extra) -> dict:
    """A RetryPolicy; `extra`: more of its fields (`retry_host_predicate`, ...)."""
    out: dict = {"retry_on": retry_on, "num_retries": num_retries, **extra}
    if per_try_timeout is not None:
        out["per_try_timeout"] = duration(per_try_timeout)
    if base_interval is not None:
        out["retry_back_off"] = {"base_interval": duration(base_interval)}
    if retriable_status_codes:
        out["retriable_status_codes"] = list(retriable_status_codes)
    return out


def match(*, prefix: str | None = None, path: str | None = None, regex: str | None = None,
          headers: list[dict] | None = None, query: list[dict] | None = None) -> dict:
    """A RouteMatch; the path condition defaults to prefix "/"."""
    if path is not None:
        out: dict = {"path": path}
    elif regex is not None:
        out = {"safe_regex": {"regex": regex}}
    else:
        out = {"prefix": prefix if prefix is not None else "/"}
    if headers:
        out["headers"] = headers
    if query:
        out["query_parameters"] = query
    return out


def route(cluster: str | None = None, *, prefix: str | None = None, path: str | None = None,
          regex: str | None = None, weighted: dict[str, int] | None = None,
          timeout: float | None = None, retry: dict | None = None,
          headers: list[dict] | None = None, name: str = "",
          query: list[dict] | None = None, action: dict | None = None,
          per_filter: dict | None = None, **fields) -> dict:
    """One route; the match defaults to prefix "/". Give `cluster` or `weighted`.

    `query`: query_parameters conditions; `action`: more RouteAction fields
    (`prefix_rewrite`, `hash_policy`, `request_mirror_policies`, ...); `per_filter`:
    typed_per_filter_config; `fields`: more Route fields (`request_headers_to_add`, ...)."""
    m = match(prefix=prefix, path=path, regex=regex, headers=headers, query=query)
    act: dict = ({"weighted_clusters": {"clusters": [{"name": n, "weight": w}
                                                     for n, w in weighted.items()]}}
                 if weighted else {"cluster": cluster})
    if timeout is not None:
        act["timeout"] = duration(timeout)
    if retry is not None:
        act["retry_policy"] = retry
    act.update(action or {})
    out = {"match": m, "route": act, **fields}
    if per_filter:
        out["typed_per_filter_config"] = per_filter
    if name:
        out["name"] = name
    return out


def direct_route(status: int, body: str = "", *, name: str = "", **match_options) -> dict:
    """A route answered by the sidecar itself (`direct_response`)."""
    out: dict = {"match": match(**match_options), "direct_response": {"status": status}}
    if body:
        out["direct_response"]["body"] = {"inline_string": body}
    if name:
        out["name"] = name
    return out


def redirect_route(*, name: str = "", prefix: str | None = None, path: str | None = None,
                   regex: str | None = None, headers: list[dict] | None = None,
                   **redirect) -> dict:
    """A route answered with a redirect; `redirect` holds RedirectAction fields
    (`path_redirect`, `prefix_rewrite`, `host_redirect`, `port_redirect`, `https_redirect`,
    `scheme_redirect`, `response_code`, `strip_query`)."""
    out: dict = {"match": match(prefix=prefix, path=path, regex=regex, headers=headers),
                 "redirect": redirect}
    if name:
        out["name"] = name
    return out


def header_value(name: str, value: str, *, append: bool | None = None,
                 append_action: str | None = None) -> dict:
    """A HeaderValueOption for `*_headers_to_add`."""
    out: dict = {"header": {"key": name, "value": value}}
    if append is not None:
        out["append"] = append
    if append_action is not None:
        out["append_action"] = append_action
    return out


def mirror(cluster: str, percent: float | None = None) -> dict:
    """A request mirror policy; `percent` of requests (all when None)."""
    out: dict = {"cluster": cluster}
    if percent is not None:
        out["runtime_fraction"] = {"default_value": {"numerator": round(percent * 10_000),
                                                     "denominator": "MILLION"}}
    return out


def hash_header(name: str) -> dict:
    return {"header": {"header_name": name}}


def hash_cookie(name: str) -> dict:
    return {"cookie": {"name": name}}


def fault(*, delay: float | None = None, delay_percent: float | None = None,
          abort_status: int | None = None, abort_percent: float | None = None,
          headers: list[dict] | None = None) -> dict:
    """An `envoy.filters.http.fault` HTTPFault typed_config (percentages of requests)."""
    out: dict = {"@type": FAULT_TYPE}
    if delay is not None:
        out["delay"] = {"fixed_delay": duration(delay)}
        if delay_percent is not None:
            out["delay"]["percentage"] = {"numerator": round(delay_percent * 10_000),
                                          "denominator": "MILLION"}
    if abort_status is not None:
        out["abort"] = {"http_status": abort_status}
        if abort_percent is not None:
            out["abort"]["percentage"] = {"numerator": round(abort_percent * 10_000),
                                          "denominator": "MILLION"}
    if headers:
        out["headers"] = headers
    return out


def fault_filter(**options) -> dict:
    """The fault filter as an entry of a listener's `http_filters` (options as `fault`)."""
    return {"name": FAULT, "typed_config": fault(**options)}


def virtual_host(name: str, domains: list[str], routes: list[dict]) -> dict:
    return {"name": name, "domains": domains, "routes": routes}


def listener(name: str, virtual_hosts: list[dict], *, port: int = 0,
             max_request_headers_kb: int | None = None,
             request_headers_timeout: float | None = None,
             connection_limit: int | None = None, direction: str = "OUTBOUND",
             http_filters: list[dict] | None = None) -> dict:
    """`http_filters`: filters to run before the router, which is always last."""
    hcm: dict = {"@type": HCM_TYPE, "stat_prefix": name,
                 "route_config": {"name": name, "virtual_hosts": virtual_hosts},
                 "http_filters": [*(http_filters or ()), ROUTER]}
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
        """The upstream's own /count: requests served, connections accepted, requests by
        Host header (`authorities`)."""
        with urllib.request.urlopen(self.url("/count"), timeout=5) as resp:
            return json.loads(resp.read())

    def fail(self, status: int, *, every: int = 1) -> None:
        """Answer every request with `status` from now on, or with `every` one request in
        that many, the first of them included (status 0: behave normally again)."""
        with urllib.request.urlopen(self.url(f"/admin/fail?status={status}&every={every}"),
                                    timeout=5):
            pass

    def delay(self, ms: int) -> None:
        """Wait `ms` before every answer from now on (0: answer at once again)."""
        with urllib.request.urlopen(self.url(f"/admin/delay?ms={ms}"), timeout=5):
            pass

    def stop(self) -> int:
        return self.process.stop(grace=2.0)


def start_upstream(name: str = "upstream", *, timeout: float = 15.0, port: int = 0) -> Upstream:
    """Start an upstream on `port` (0: the kernel chooses; a port number: to bring back an
    upstream that was stopped, on the port a cluster names)."""
    process, ready = procs.start(
        [sys.executable, "-m", "plait.testing.upstream", "--port", str(port), "--name", name],
        ready=UPSTREAM_READY, timeout=timeout, name=f"upstream {name}")
    return Upstream(process, int(ready.group(1)), name)


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
