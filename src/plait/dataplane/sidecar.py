"""The sidecar process: load config, bind listeners, run workers, serve admin.

With `--concurrency N` the main process binds every listener N times with SO_REUSEPORT
(the kernel spreads connections), forks N-1 worker processes, and serves as worker 0 and
as the admin endpoint itself. Workers talk to the main process over a socketpair: they
say `ready` once serving, answer `stats` with a JSON snapshot, and obey `drain` and
`quit`; a worker whose main process dies exits too (PR_SET_PDEATHSIG and EOF).

Readiness is a line on stdout, `plait sidecar ready admin=HOST:PORT listeners=...`, printed
only when every worker serves, and `GET /ready` on the admin port.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass

import uvloop

from plait.core.errors import ConfigError
from plait.dataplane.admin import AdminHandlers, start_admin
from plait.dataplane.bootstrap import load_bootstrap
from plait.dataplane.config import Snapshot
from plait.dataplane.stats import merge
from plait.dataplane.worker import Worker

CHILD_TIMEOUT = 10.0  # seconds a worker may take to report ready or answer


@dataclass(frozen=True, slots=True)
class SidecarOptions:
    bootstrap: str
    concurrency: int = 1
    access_log: str | None = "-"
    drain_timeout: float = 5.0


def run(options: SidecarOptions) -> int:
    try:
        snapshot = load_bootstrap(options.bootstrap).snapshot
    except ConfigError as exc:
        print(f"plait sidecar: invalid bootstrap: {exc}", file=sys.stderr)
        return 2
    try:
        sockets = bind_listeners(snapshot, options.concurrency)
    except OSError as exc:
        print(f"plait sidecar: cannot listen: {exc}", file=sys.stderr)
        return 1
    children = []
    for i in range(1, options.concurrency):
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            ours.close()
            for j, socks in enumerate(sockets):
                if j != i:
                    for s in socks.values():
                        s.close()
            code = 1
            try:
                code = uvloop.run(_worker_main(snapshot, sockets[i], theirs, options))
            finally:
                os._exit(code)
        theirs.close()
        for s in sockets[i].values():
            s.close()
        children.append(_Child(pid, ours))
    try:
        return uvloop.run(_main(snapshot, sockets[0], children, options))
    finally:
        for child in children:
            child.reap()


def bind_listeners(snapshot: Snapshot, n: int) -> list[dict[str, socket.socket]]:
    """N sockets per listener (one per worker), all on one address with SO_REUSEPORT."""
    out: list[dict[str, socket.socket]] = [{} for _ in range(n)]
    for cfg in snapshot.listeners:
        port = cfg.port
        for i in range(n):
            family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if n > 1:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((cfg.host, port))
            s.listen(1024)
            s.setblocking(False)
            port = s.getsockname()[1]  # port 0: the others join the one the kernel chose
            out[i][cfg.name] = s
    return out


class _Child:
    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(sock=self.sock)
        line = await asyncio.wait_for(self.reader.readline(), CHILD_TIMEOUT)
        if line.strip() != b"ready":
            raise RuntimeError(f"worker {self.pid} did not start")

    async def ask(self, command: bytes) -> bytes:
        async with self.lock:
            self.writer.write(command + b"\n")
            return await asyncio.wait_for(self.reader.readline(), CHILD_TIMEOUT)

    def tell(self, command: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(command + b"\n")

    def reap(self) -> None:
        """Wait for the worker to exit; after the drain deadline, kill it."""
        for _ in range(2):
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                return
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            os.waitpid(self.pid, 0)
            return


async def _main(snapshot: Snapshot, sockets: dict, children: list, options) -> int:
    loop = asyncio.get_running_loop()
    worker = Worker(snapshot, access_log=options.access_log)
    await worker.start(sockets)
    for child in children:
        await child.open()
    stop = asyncio.Event()
    mode = {"drain": True}

    async def stats() -> dict:
        snaps = [worker.stats.snapshot()]
        for child in children:
            try:
                snaps.append(json.loads(await child.ask(b"stats")))
            except (asyncio.TimeoutError, ValueError, ConnectionError):
                pass  # a worker that cannot answer contributes nothing this time
        return merge(snaps)

    def request_stop(drain: bool) -> None:
        mode["drain"] = drain
        handlers.draining = True
        stop.set()

    handlers = AdminHandlers(
        stats=stats, config=lambda: config_dump(worker.snapshot),
        clusters=lambda merged: clusters_view(worker, merged),
        drain=lambda: request_stop(True), quit=lambda: request_stop(False))
    admin = await start_admin(handlers, snapshot.admin_host, snapshot.admin_port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, True)
    handlers.ready = True
    admin_addr = admin.sockets[0].getsockname()
    listeners = ",".join(f"{name}@{s.getsockname()[0]}:{s.getsockname()[1]}"
                         for name, s in sockets.items())
    print(f"plait sidecar ready admin={admin_addr[0]}:{admin_addr[1]} listeners={listeners} "
          f"workers={len(children) + 1}", flush=True)
    sweeper = loop.create_task(worker.sweep_forever())
    try:
        await stop.wait()
        for child in children:
            child.tell(b"drain" if mode["drain"] else b"quit")
        if mode["drain"]:
            await worker.drain(options.drain_timeout)
        else:
            worker.close()
    finally:
        sweeper.cancel()
        admin.close()
        worker.close()
    await _wait_children(children, options.drain_timeout + 1.0)
    return 0


async def _wait_children(children: list, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    for child in children:
        while asyncio.get_running_loop().time() < deadline:
            try:
                pid, _ = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            await asyncio.sleep(0.05)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the control socket's EOF still ends the worker


async def _worker_main(snapshot: Snapshot, sockets: dict, ctl: socket.socket, options) -> int:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    loop = asyncio.get_running_loop()
    worker = Worker(snapshot, access_log=options.access_log)
    await worker.start(sockets)
    reader, writer = await asyncio.open_connection(sock=ctl)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    writer.write(b"ready\n")
    sweeper = loop.create_task(worker.sweep_forever())
    drain = True
    try:
        while not stop.is_set():
            read = loop.create_task(reader.readline())
            stopped = loop.create_task(stop.wait())
            await asyncio.wait((read, stopped), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not read.done():
                read.cancel()
                break
            line = read.result().strip()
            if line == b"stats":
                writer.write(json.dumps(worker.stats.snapshot()).encode() + b"\n")
            elif line in (b"drain", b"quit", b""):
                drain = line == b"drain"
                break
        if drain:
            await worker.drain(options.drain_timeout)
    finally:
        sweeper.cancel()
        worker.close()
    return 0


def config_dump(snapshot: Snapshot) -> dict:
    return {
        "version": snapshot.version,
        "node_id": snapshot.node_id,
        "listeners": [{"name": l.name, "address": f"{l.host}:{l.port}",
                       "direction": l.direction.value,
                       "route_config": l.route_table.name if l.route_table else l.rds_name}
                      for l in snapshot.listeners],
        "clusters": [{"name": c.name, "lb_policy": c.lb_policy.value,
                      "endpoints": [e.key for e in c.endpoints]}
                     for c in snapshot.clusters.values()],
        "source": snapshot.raw,
    }


def clusters_view(worker: Worker, merged: dict) -> list:
    counters, gauges = merged["counters"], merged["gauges"]
    out = []
    for c in worker.clusters.clusters.values():
        endpoints = []
        for h in c.hosts:
            key = (("cluster", c.name), ("host", h.key))
            endpoints.append({
                "address": h.key, "health": "healthy", "weight": h.endpoint.weight,
                "zone": h.endpoint.zone,
                "rq_total": counters.get(("upstream_host_rq_total", key), 0),
                "cx_active": gauges.get(("upstream_host_cx_active", key), 0),
            })
        out.append({"name": c.name, "lb_policy": c.config.lb_policy.value,
                    "endpoints": endpoints})
    return out
