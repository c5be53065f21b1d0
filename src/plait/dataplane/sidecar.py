"""The sidecar process: load config, bind listeners, run workers, serve admin.

With `--concurrency N` the main process binds every static listener N times with
SO_REUSEPORT (the kernel spreads connections), forks N-1 worker processes, and serves as
worker 0 and as the admin endpoint itself. Workers talk to the main process over a
socketpair (`plait.dataplane.workers`).

Config comes from the bootstrap's static resources or, when the bootstrap names a control
plane, from xDS: the main process alone runs the xDS client (gRPC is started only after
the fork), compiles each update once and hands the snapshot to every worker. The last good
xDS config is cached on disk; when the control plane does not answer within
`initial_fetch_timeout`, the sidecar starts from the cache.

Identity (`plait.dataplane.identity`, only with `--token-file` or `--cert-dir`): before
anything is bound or forked the sidecar gets its workload certificate, or exits 1 if the
control plane refuses it; the main process then renews it, and every worker reads the
files again for its next TLS handshake. The xDS channel and the API calls use mTLS when
the control plane's API is https; the instance is registered as mTLS-capable.

Readiness is a line on stdout, `plait sidecar ready admin=HOST:PORT listeners=...`, printed
when every worker serves its first config, and `GET /ready` on the admin port.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import uvloop

from plait.core.errors import ConfigError
from plait.dataplane import xds_cache
from plait.dataplane.admin import AdminHandlers, start_admin
from plait.dataplane.bootstrap import Bootstrap, load_bootstrap, parse_bootstrap
from plait.dataplane.compile import compile_snapshot
from plait.dataplane.config import Snapshot
from plait.dataplane.http.client import request_json
from plait.dataplane.net.tls_config import TlsFiles
from plait.dataplane.net.tls_store import TlsStore
from plait.dataplane.registration import Registration
from plait.dataplane.stats import merge
from plait.dataplane.telemetry import Reporter
from plait.dataplane.views import clusters_view, config_dump
from plait.dataplane.worker import Worker, bind_socket
from plait.dataplane.workers import WorkerChannel, fork_workers, wait_workers
from plait.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE


@dataclass(frozen=True, slots=True)
class SidecarOptions:
    bootstrap: str = ""
    bootstrap_document: dict | None = None  # built from flags instead of a file
    concurrency: int = 1
    access_log: str | None = "-"
    drain_timeout: float = 5.0
    cache_dir: str = ""
    initial_fetch_timeout: float = 3.0
    token_file: str = ""  # join token: proves who the sidecar is to get a certificate
    cert_dir: str = ""  # key, certificate and bundle ("" with a token: under cache_dir)
    ca_file: str = ""  # trust bundle for an https control plane before the first certificate


def run(options: SidecarOptions) -> int:
    try:
        boot = (parse_bootstrap(options.bootstrap_document)
                if options.bootstrap_document is not None else load_bootstrap(options.bootstrap))
    except ConfigError as exc:
        print(f"plait sidecar: invalid bootstrap: {exc}", file=sys.stderr)
        return 2
    try:
        sockets = bind_static(boot.snapshot, options.concurrency)
    except OSError as exc:
        print(f"plait sidecar: cannot listen: {exc}", file=sys.stderr)
        return 1
    identity = None
    if options.token_file or options.cert_dir:
        identity, options = _obtain_identity(boot, options)
        if options is None:
            for socks in sockets:
                for sock in socks.values():
                    sock.close()
            return 1
    node = (boot.app, boot.snapshot.node_id)
    children = fork_workers(boot.snapshot, sockets, options,
                            worker_main=functools.partial(_worker_main, node=node))
    try:
        return uvloop.run(_main(boot, sockets[0], children, options, identity))
    finally:
        for child in children:
            child.reap()


def bind_static(snapshot: Snapshot, n: int) -> list[dict]:
    """One socket per static listener per worker. Workers after the first join the port
    the first one got (which matters for port 0)."""
    out: list[dict] = []
    for i in range(n):
        socks = {}
        for cfg in snapshot.listeners:
            port = cfg.port if i == 0 else out[0][cfg.name].getsockname()[1]
            socks[cfg.name] = bind_socket(cfg.host, port, reuse_port=n > 1)
        out.append(socks)
    return out


def _obtain_identity(boot: Bootstrap, options: SidecarOptions):
    """(identity or None, options with the certificate directory resolved); (None, None)
    when the sidecar must not start. Runs before the fork, on a loop of its own that is
    gone (with its threads) when it returns."""
    from plait.dataplane.identity import IdentityRefused, prepare

    try:
        identity, cert_dir = prepare(
            api=boot.registration.registry if boot.registration else "",
            node_id=boot.snapshot.node_id, token_file=options.token_file,
            cert_dir=options.cert_dir, cache_dir=options.cache_dir, ca_file=options.ca_file)
        if identity is not None:
            asyncio.run(identity.obtain())
    except (IdentityRefused, ValueError, OSError) as exc:
        print(f"plait sidecar: no workload identity: {exc}", file=sys.stderr, flush=True)
        return None, None
    if identity is not None:
        print(f"plait sidecar: workload identity {identity.spiffe_id}", file=sys.stderr,
              flush=True)
    return identity, replace(options, cert_dir=cert_dir)


def _tls_store(options: SidecarOptions) -> TlsStore:
    """Where "the workload certificate" of TLS settings comes from, in this process."""
    if not options.cert_dir:
        return TlsStore()
    d = Path(options.cert_dir)
    return TlsStore(TlsFiles(str(d / "cert.pem"), str(d / "key.pem"), str(d / "bundle.pem")))


async def _main(boot: Bootstrap, sockets: dict, children: list[WorkerChannel],
                options: SidecarOptions, identity=None) -> int:
    loop = asyncio.get_running_loop()
    snapshot = boot.snapshot
    worker = Worker(snapshot, access_log=options.access_log, tls=_tls_store(options),
                    node=(boot.app, snapshot.node_id), shared_ports=options.concurrency > 1)
    if identity is not None:
        identity.listeners.append(worker.tls.refresh)
        boot.message.node.metadata.update(identity.node_metadata())
    await worker.start(sockets)
    for child in children:
        await child.open()
    stop = asyncio.Event()
    first_config = asyncio.Event()
    mode = {"drain": True}
    xds = None
    cache_path = _cache_path(options, snapshot.node_id)

    async def install(snap: Snapshot) -> None:
        await worker.apply(snap)
        for child in children:
            await child.push(snap)
        first_config.set()

    def on_xds_snapshot(snap: Snapshot, resources: dict) -> None:  # on the xDS thread
        if cache_path:
            try:
                xds_cache.save(cache_path, resources, snap.version)
            except OSError as exc:
                print(f"plait sidecar: cannot write xDS cache: {exc}", file=sys.stderr)
        asyncio.run_coroutine_threadsafe(install(snap), loop)

    if boot.ads_target:
        from plait.dataplane.xds_client import AdsClient  # gRPC only after the fork

        xds = AdsClient(target=boot.ads_target, node=boot.message.node,
                        admin=(snapshot.admin_host, snapshot.admin_port),
                        on_snapshot=on_xds_snapshot,
                        credentials=(identity.grpc_credentials
                                     if identity is not None and identity.over_tls else None))
        xds.start()
        try:
            await asyncio.wait_for(first_config.wait(), options.initial_fetch_timeout)
        except asyncio.TimeoutError:
            cached = _load_cache(cache_path, snapshot)
            if cached is not None:
                print(f"plait sidecar: control plane {boot.ads_target} not answering; "
                      f"serving cached config {cached.version}", file=sys.stderr, flush=True)
                await install(cached)
        await first_config.wait()
    else:
        first_config.set()

    async def stats() -> dict:
        if xds is not None:
            worker.stats.config_rejected = sum(xds.status.nacks.values())
        snaps = [worker.stats.snapshot()]
        for child in children:
            snap = await child.stats()
            if snap is not None:
                snaps.append(snap)
        return merge(snaps)

    def request_stop(drain: bool) -> None:
        mode["drain"] = drain
        handlers.draining = True
        stop.set()

    handlers = AdminHandlers(
        stats=stats, config=lambda: config_dump(worker.snapshot, xds),
        clusters=lambda merged: clusters_view(worker, merged),
        drain=lambda: request_stop(True), quit=lambda: request_stop(False))
    admin = await start_admin(handlers, snapshot.admin_host, snapshot.admin_port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, True)
    registration = None
    tasks: set[asyncio.Task] = {loop.create_task(worker.sweep_forever())}
    if identity is not None:
        tasks.add(loop.create_task(identity.run()))
    if boot.registration is not None:
        spec = boot.registration
        if identity is not None:
            spec = replace(spec, labels=tuple(sorted(
                {**dict(spec.labels), **identity.registry_labels()}.items())))
        registration = Registration(spec, auth=identity)
        tasks.add(loop.create_task(registration.run()))

        async def gather_events() -> list[dict]:
            drained = [worker.drain_events()]
            for child in children:
                got = await child.events()
                if got is not None:
                    drained.append(got)
            return drained

        reporter = Reporter(registry=boot.registration.registry, node_id=snapshot.node_id,
                            app=boot.app, stats=stats, gather=gather_events,
                            counters=worker.stats, set_healthy=registration.set_healthy,
                            telemetry_interval=boot.telemetry_interval,
                            post=functools.partial(request_json, auth=identity))
        tasks.add(loop.create_task(reporter.run()))
    handlers.ready = True
    admin_addr = admin.sockets[0].getsockname()
    listeners = ",".join(f"{name}@{host}:{port}"
                         for name, (host, port) in worker.listener_addresses().items())
    print(f"plait sidecar ready admin={admin_addr[0]}:{admin_addr[1]} listeners={listeners} "
          f"workers={len(children) + 1}", flush=True)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # deregisters
        if xds is not None:
            await loop.run_in_executor(None, xds.stop)
        for child in children:
            child.tell(b"drain" if mode["drain"] else b"quit")
        if mode["drain"]:
            await worker.drain(options.drain_timeout)
        admin.close()
        worker.close()
    await wait_workers(children, options.drain_timeout + 1.0)
    return 0


def _cache_path(options: SidecarOptions, node_id: str) -> str:
    if not options.cache_dir:
        return ""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node_id or "sidecar")
    return os.path.join(options.cache_dir, f"{safe}.xds.json")


def _load_cache(path: str, static: Snapshot) -> Snapshot | None:
    if not path:
        return None
    try:
        found = xds_cache.load(path)
        if found is None:
            return None
        resources, version = found
        return compile_snapshot(
            version=f"cache:{version}", listeners=resources.get(LISTENER, ()),
            clusters=resources.get(CLUSTER, ()), routes=resources.get(ROUTE, ()),
            endpoints=resources.get(ENDPOINT, ()), node_id=static.node_id,
            admin=(static.admin_host, static.admin_port))
    except ConfigError as exc:
        print(f"plait sidecar: ignoring xDS cache: {exc}", file=sys.stderr, flush=True)
        return None


async def _worker_main(snapshot: Snapshot, sockets: dict, channel, options, *,
                       node: tuple[str, str] = ("", "")) -> int:
    """Entry of a forked worker: serve, answer the main process, apply pushed configs."""
    worker = Worker(snapshot, access_log=options.access_log, node=node, shared_ports=True,
                    tls=_tls_store(options))
    await worker.start(sockets)
    return await channel.serve(worker, drain_timeout=options.drain_timeout)
