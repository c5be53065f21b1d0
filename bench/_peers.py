"""The reference processes benchmarks run beside Plait: an nginx upstream and HAProxy.

Each gets its own configuration in the benchmark's temp dir (prefix, pid file, logs), listens
on a loopback port chosen by the harness, runs in the foreground so the harness owns it,
and is judged ready when it answers GET / with 200. Settings mirror what a fair comparison
needs: one worker/thread, keep-alive on both sides, no access log.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from _harness import Proc, Procs, free_port, wait_http

# A small fixed body: the benchmark measures the proxy, not payload copying.
UPSTREAM_BODY = "hello from the plait bench upstream\n"


@dataclass
class Server:
    """A started server: its process (for memory and stopping) and where it listens."""

    proc: Proc
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None
               and shutil.which(n, path="/usr/sbin:/usr/local/sbin") is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make bench-debs` (as root)")


def start_nginx(procs: Procs, workdir: Path, *, cpus: set[int] | None) -> Server:
    """nginx with one worker answering every request with UPSTREAM_BODY."""
    prefix = workdir / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    body = UPSTREAM_BODY.replace("\n", "\\n")
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 10000000;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
""")
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin") or "nginx"
    proc = procs.start("nginx", [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"),
                                 "-c", str(conf)], cpus=cpus)
    wait_http(port, proc)
    return Server(proc, "127.0.0.1", port)


def start_haproxy(procs: Procs, workdir: Path, upstream: Server, *, cpus: set[int] | None) -> Server:
    """HAProxy, one thread, HTTP mode, upstream connections kept alive and shared."""
    port = free_port()
    conf = workdir / "haproxy.cfg"
    conf.write_text(f"""
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 60s
frontend outbound
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server app1 {upstream.host}:{upstream.port}
""")
    haproxy = shutil.which("haproxy", path="/usr/sbin:/usr/bin:/usr/local/sbin") or "haproxy"
    proc = procs.start("haproxy", [haproxy, "-db", "-f", str(conf)], cpus=cpus)
    wait_http(port, proc)
    return Server(proc, "127.0.0.1", port)
