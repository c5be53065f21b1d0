"""Control plane commands: `control`, `apply`, `get`, `delete`, `history`, `rollback`,
`services`, `proxy-status`.

Everything but `control` is a thin client of the REST API at `$PLAIT_CONTROL` (default
http://127.0.0.1:15080): the CLI does no validation of its own beyond naming the kind, so
it can never disagree with the server. Failures print `error: <path>: <reason>` to stderr
and exit 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Any, Callable

import httpx
import yaml
from rich.console import Console
from rich.table import Table

from plait.cli import credentials
from plait.core.errors import ConfigError
from plait.model import resolve_kind

DEFAULT_CONTROL = "http://127.0.0.1:15080"
TIMEOUT = 10.0


class CommandError(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)


def _base_url() -> str:
    return os.environ.get("PLAIT_CONTROL", DEFAULT_CONTROL).rstrip("/")


def _call(method: str, path: str, **kwargs: Any) -> Any:
    """One API request; returns the decoded JSON or raises CommandError with the server's
    path and reason."""
    url = _base_url() + path
    try:
        options = credentials.request_options(kwargs.pop("headers", None))
    except credentials.CredentialsError as exc:
        raise CommandError("", str(exc)) from None
    try:
        response = httpx.request(method, url, timeout=TIMEOUT, **options, **kwargs)
    except httpx.HTTPError as exc:
        where = f"cannot reach the control plane at {_base_url()}: {exc}"
        raise CommandError("", where + credentials.hint(error=str(exc))) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and body is not None:
        return body
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        raise CommandError("", f"HTTP {response.status_code} from {url}")
    reason = str(err.get("reason", "")) + credentials.hint(response.status_code)
    if "document" in err:
        reason += f" (document {err['document']})"
    raise CommandError(str(err.get("path", "")), reason)


def _resource_path(kind: str, namespace: str, name: str) -> str:
    return f"/api/v1/resources/{resolve_kind(kind)}/{namespace}/{name}"


def _console() -> Console:
    # Off a terminal (pipes, tests) use a wide line so tables are not wrapped mid-cell.
    return Console() if sys.stdout.isatty() else Console(width=200)


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def _summary(resource: dict[str, Any]) -> str:
    spec = resource.get("spec", {})
    if "hosts" in spec:
        return ",".join(spec["hosts"])
    return str(spec.get("host") or spec.get("service", ""))  # plait.io kinds name a service


def _dump(data: Any, output: str, *, documents: bool = False) -> None:
    """Print JSON, or YAML (a list as separate YAML documents when `documents`)."""
    if output == "json":
        print(json.dumps(data, indent=2))
    elif documents:
        print(yaml.safe_dump_all(data, sort_keys=False), end="")
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")


# --- commands ------------------------------------------------------------------------


def cmd_control(args: argparse.Namespace) -> int:
    from plait.controlplane import server  # the server's imports are only paid for here

    return server.main(args)


def cmd_apply(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    except OSError as exc:
        raise CommandError("", f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError("", f"{args.file} is not UTF-8 text") from None
    result = _call("POST", "/api/v1/apply", content=text.encode(),
                   headers={"content-type": "application/yaml"})  # fmt: skip
    for item in result["applied"]:
        state = "configured" if item["changed"] else "unchanged"
        what = f"{item['kind']} {item['namespace']}/{item['name']}"
        print(f"{what} {state} (version {item['version']})")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    if args.name:
        items = [_call("GET", _resource_path(args.kind, args.namespace or "default", args.name))]
    else:
        params = {"namespace": args.namespace} if args.namespace else {}
        items = _call("GET", f"/api/v1/resources/{resolve_kind(args.kind)}", params=params)["items"]
    if args.output != "table":
        docs = [item["resource"] for item in items]
        _dump(docs[0] if args.name else docs, args.output, documents=not args.name)
        return 0
    if not items:
        print(f"no {resolve_kind(args.kind)} found", file=sys.stderr)
        return 0
    table = _table("NAMESPACE", "NAME", "HOSTS", "VERSION", "UPDATED")
    for item in items:
        table.add_row(item["namespace"], item["name"], _summary(item["resource"]),
                      str(item["version"]), _when(item["updatedAt"]))  # fmt: skip
    _console().print(table)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    item = _call("DELETE", _resource_path(args.kind, args.namespace, args.name))
    print(f"{item['kind']} {item['namespace']}/{item['name']} deleted (version {item['version']})")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    items = _call("GET", _resource_path(args.kind, args.namespace, args.name) + "/history")["items"]
    if args.output != "table":
        _dump(items, args.output)
        return 0
    table = _table("VERSION", "REVISION", "UPDATED", "CHANGE")
    for i, item in enumerate(items):
        if item["deleted"]:
            change = "deleted"
        else:
            change = "created" if i == 0 or items[i - 1]["deleted"] else "updated"
        table.add_row(str(item["version"]), str(item["revision"]), _when(item["updatedAt"]), change)
    _console().print(table)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    item = _call("POST", _resource_path(args.kind, args.namespace, args.name) + "/rollback",
                 json={"version": args.to})  # fmt: skip
    what = f"{item['kind']} {item['namespace']}/{item['name']}"
    if item["changed"]:
        print(f"{what} rolled back to version {args.to} (now version {item['version']})")
    else:
        print(f"{what} already has the content of version {args.to} (version {item['version']})")
    return 0


def cmd_services(args: argparse.Namespace) -> int:
    services = _call("GET", "/api/v1/registry/services")["services"]
    if args.output != "table":
        _dump(services, args.output)
        return 0
    table = _table("SERVICE", "INSTANCE", "ADDRESS", "PROTOCOL", "LABELS", "HEALTHY", "LEASE")
    for service in services:
        for inst in service["instances"]:
            labels = ",".join(f"{k}={v}" for k, v in sorted(inst["labels"].items()))
            table.add_row(service["name"], inst["instanceId"], f"{inst['address']}:{inst['port']}",
                          inst["protocol"], labels or "-", "yes" if inst["healthy"] else "no",
                          f"{inst['expiresIn']:.1f}s/{inst['ttl']:g}s")  # fmt: skip
    _console().print(table)
    return 0


def cmd_proxy_status(args: argparse.Namespace) -> int:
    proxies = _call("GET", "/api/v1/proxies")["proxies"]
    if args.output != "table":
        _dump(proxies, args.output)
        return 0
    if not proxies:
        print("no proxies connected", file=sys.stderr)
        return 0
    table = _table("PROXY", "APP", "MODE", "CONNECTED SINCE", "TYPE", "SENT", "ACKED",
                   "PUSH→ACK", "LAST NACK")
    for proxy in sorted(proxies, key=lambda p: str(p.get("node_id", ""))):
        types = proxy.get("types") or {}
        first = True
        for type_name, t in sorted(types.items()):
            nack = t.get("last_nack") or {}
            latency = t.get("push_latency_ms")
            acked = t.get("version_acked") or "-"
            in_sync = acked == t.get("version_sent")
            table.add_row(
                str(proxy.get("node_id", "")) if first else "",
                str(proxy.get("app", "")) if first else "",
                str(proxy.get("mode", "")) if first else "",
                str(proxy.get("connected_since", ""))[:19] if first else "",
                type_name, _short(t.get("version_sent")),
                _short(acked) if in_sync else f"[yellow]{_short(acked)}[/]",
                f"{latency:.0f} ms" if isinstance(latency, (int, float)) else "-",
                f"[red]{nack.get('error', '')}[/]" if nack else "")
            first = False
    _console().print(table)
    return 0


def _short(version) -> str:
    text = str(version or "-")
    return text if len(text) <= 12 else text[:12] + "…"


# --- wiring --------------------------------------------------------------------------


def _run(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (CommandError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the control plane subcommands; each sets `func(args) -> exit code`."""
    p = subparsers.add_parser("control", help="run the control plane")
    p.add_argument("--data-dir", required=True, help="where the config store lives")
    p.add_argument("--api-host", default="127.0.0.1")
    p.add_argument("--api-port", type=int, default=15080, help="REST API port; 0 picks a free one")
    p.add_argument("--xds-host", default="127.0.0.1")
    # 15010: Istio's plaintext xDS port.
    p.add_argument("--xds-port", type=int, default=15010, help="xDS (ADS) port; 0 picks a free one")
    from plait.cli import security_cmds  # here: it imports this module's helpers

    security_cmds.add_control_options(p)
    p.set_defaults(func=cmd_control)

    p = subparsers.add_parser("apply", help="create or update resources from YAML")
    p.add_argument("-f", "--filename", dest="file", required=True, help="YAML file, or - for stdin")
    p.set_defaults(func=_run(cmd_apply))

    p = subparsers.add_parser("get", help="show resources (kinds: vs, dr, se, rl, cb, degrade, alarm)")
    p.add_argument("kind")
    p.add_argument("name", nargs="?")
    p.add_argument("-n", "--namespace",
                   help="default: all namespaces for a list, 'default' for a name")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    p.set_defaults(func=_run(cmd_get))

    by_name = (
        ("delete", cmd_delete, "delete a resource"),
        ("history", cmd_history, "list a resource's versions"),
        ("rollback", cmd_rollback, "make an old version current again"),
    )
    for name, func, text in by_name:
        p = subparsers.add_parser(name, help=text)
        p.add_argument("kind")
        p.add_argument("name")
        p.add_argument("-n", "--namespace", default="default")
        if name == "rollback":
            p.add_argument("--to", type=int, required=True, metavar="VERSION")
        if name == "history":
            p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
        p.set_defaults(func=_run(func))

    listings = (
        ("services", cmd_services, "list registered services"),
        ("proxy-status", cmd_proxy_status, "show connected proxies"),
    )
    for name, func, text in listings:
        p = subparsers.add_parser(name, help=text)
        p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
        p.set_defaults(func=_run(func))

    security_cmds.register(subparsers)

    from plait.cli import governance_cmds  # here: it imports this module's helpers

    governance_cmds.register(subparsers)
