"""`plait control`: the config store, the registry, the REST API and the xDS push in one
asyncio program.

Assembly, in order: open the store (SQLite in the data directory), create the registry
with the leases stored beside it (so a restart serves the instances it had, each with a
fresh TTL to heartbeat in: `plait.controlplane.lease_table`), join both into the
`MeshState` view, start the push side on that view (if installed), start the alarm hub
(events, telemetry, alarm delivery; `plait.controlplane.alarms`), then serve the API
with uvicorn as a task of the same task group. Once the API socket is accepting, one
line goes to stdout:

    plait control ready api=HOST:PORT xds=HOST:PORT

with the real ports (port 0 picks a free one), so launchers wait on it instead of
guessing.

Security (`security_setup`): the mesh CA and the token/audit tables are opened beside the
store, and every API request is authenticated unless `--insecure-dev` is given. With
`--bootstrap-admin-token-file` a first admin token is written (mode 0600) when no admin
token exists yet. A plain-HTTP API is refused beyond loopback: bearer tokens must not
cross a network in clear text (`--api-tls`).

SIGTERM and SIGINT stop the API, the push side and the lease checker, then the store is
closed and the process exits 0.

Push hook. If `plait.controlplane.push` exports `start_push`, it is called as

    start_push(view: MeshView, xds_host: str, xds_port: int) -> async context manager

(with `credentials=` grpc server credentials as well under `--api-tls`: xDS then takes
mTLS with workload certificates, `plait.controlplane.xds_tls`) and entered before the
API starts; it is exited on shutdown. The object it yields may have
`port` (the bound xDS port, needed when xds_port is 0) and `proxy_status()`
(a `ProxyStatusSource` for `GET /api/v1/proxies`); both are optional. Without the push
side the ready line says `xds=off`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import socket
import sqlite3
import sys
from typing import Any, Callable

import uvicorn

from plait.core.errors import PlaitError
from plait.controlplane.alarms import open_alarm_hub
from plait.controlplane.api import create_app
from plait.controlplane.lease_table import LeaseTable
from plait.controlplane.security_setup import open_security
from plait.controlplane.xds_tls import xds_credentials
from plait.controlplane.registry import Registry
from plait.controlplane.store import SqliteStore
from plait.controlplane.view import MeshState

log = logging.getLogger("plait.control")


class _ApiServer(uvicorn.Server):
    """uvicorn that reports readiness and leaves signals to its owner."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        # The control plane owns SIGTERM/SIGINT; uvicorn would re-raise them after
        # shutdown and turn a clean stop into death by signal.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.set()


def find_start_push() -> Callable[..., Any] | None:
    """The push side's `start_push`, or None when `plait.controlplane.push` is absent.

    A push package that exists but fails to import is an error, not a silent "off".
    """
    try:
        module = importlib.import_module("plait.controlplane.push")
    except ModuleNotFoundError as exc:
        if exc.name == "plait.controlplane.push":
            return None
        raise
    return getattr(module, "start_push", None)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PlaitError(f"cannot listen on {host}:{port} for the API: {exc.strerror}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _xds_address(push: Any, args: argparse.Namespace) -> str:
    if push is None:
        return "off"
    return _hostport(args.xds_host, getattr(push, "port", args.xds_port))


async def _serve(api: _ApiServer, sock: socket.socket, *, background: list[Callable[[], Any]],
                 stop: asyncio.Event, ready_line: Callable[[], str]) -> bool:
    """Run the API and the `background` loops (lease checker, CA upkeep) until `stop`;
    False if the API never came up."""
    async with asyncio.TaskGroup() as tg:
        loops = [tg.create_task(run(), name=run.__qualname__) for run in background]
        serving = tg.create_task(api.serve(sockets=[sock]), name="api")
        ready = tg.create_task(api.ready.wait(), name="api-ready")
        await asyncio.wait([ready, serving], return_when=asyncio.FIRST_COMPLETED)
        if api.ready.is_set():
            print(ready_line(), flush=True)
            stopping = tg.create_task(stop.wait(), name="stop")
            await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        api.should_exit = True
        for loop in loops:
            loop.cancel()
        stop.set()
    return api.ready.is_set()


async def run_control(args: argparse.Namespace) -> int:
    """Run the control plane until SIGTERM/SIGINT. `args` carries data_dir, api_host,
    api_port, xds_host and xds_port (the `plait control` options). Returns the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        store = SqliteStore.open(args.data_dir)
    except (PlaitError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        security = open_security(args)
    except (PlaitError, OSError, ValueError) as exc:
        store.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        leases = LeaseTable.open(args.data_dir)
    except sqlite3.Error as exc:
        security.close()
        store.close()
        print(f"error: cannot open the registry's leases in {args.data_dir}: {exc}",
              file=sys.stderr)
        return 1
    try:
        registry = Registry(table=leases)
        view = MeshState(store, registry)
        start_push = find_start_push()
        async with contextlib.AsyncExitStack() as stack:
            push = None
            if start_push is not None:
                try:
                    tls = {} if security.tls is None else {"credentials": xds_credentials(
                        security.tls, security.api.authority)}
                    push = await stack.enter_async_context(
                        start_push(view, args.xds_host, args.xds_port, **tls)
                    )
                except (OSError, RuntimeError) as exc:  # grpc reports a busy port as RuntimeError
                    where = _hostport(args.xds_host, args.xds_port)
                    raise PlaitError(f"cannot serve xDS on {where}: {exc}") from None
            proxy_status = getattr(push, "proxy_status", None) or (lambda: [])
            alarms = await stack.enter_async_context(open_alarm_hub(args.data_dir, store))
            app = create_app(store=store, registry=registry, proxy_status=proxy_status,
                             alarms=alarms, security=security.api)  # fmt: skip
            sock = _bind(args.api_host, args.api_port)
            stack.callback(sock.close)
            config = uvicorn.Config(app, log_level="warning", access_log=False,
                                    lifespan="off", timeout_graceful_shutdown=5,
                                    **security.uvicorn_options())  # fmt: skip

            def ready_line() -> str:
                api = _hostport(args.api_host, sock.getsockname()[1])
                return f"plait control ready api={api} xds={_xds_address(push, args)}"

            up = await _serve(_ApiServer(config), sock, stop=stop, ready_line=ready_line,
                              background=[registry.run, *security.background()])  # fmt: skip
        if not up:
            raise PlaitError("the API server stopped during start-up")
        return 0
    except (PlaitError, OSError, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        leases.close()
        security.close()
        store.close()


def main(args: argparse.Namespace) -> int:
    """Entry point for the `control` subcommand."""
    try:
        import uvloop
    except ImportError:  # uvloop is a declared dependency; stay usable without it
        return asyncio.run(run_control(args))
    return uvloop.run(run_control(args))
