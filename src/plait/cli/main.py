"""`plait`: one command for every part of the mesh.

Each part registers its own subcommands (keeps this file a table of contents).
"""

from __future__ import annotations

import argparse
import os
import sys


def _sidecar(args: argparse.Namespace) -> int:
    from plait.core.errors import ConfigError
    from plait.dataplane.bootstrap import dynamic_bootstrap
    from plait.dataplane.sidecar import SidecarOptions, run

    document = None
    if not args.bootstrap:
        if not (args.xds and args.app):
            print("plait sidecar: give --bootstrap FILE, or --xds HOST:PORT with --app NAME",
                  file=sys.stderr)
            return 2
        try:
            document = dynamic_bootstrap(
                node_id=args.node_id or f"{args.app}-{args.inbound_port}", app=args.app,
                xds=args.xds, registry=args.registry, app_port=args.app_port,
                labels=_pairs(args.labels), dependencies=_list(args.dependencies),
                outbound_port=args.outbound_port, inbound_port=args.inbound_port,
                admin_port=args.admin_port, instance_address=args.instance_address,
                protocol=args.protocol, lease_ttl=args.lease_ttl)
        except (ConfigError, ValueError) as exc:
            print(f"plait sidecar: {exc}", file=sys.stderr)
            return 2
    access_log = None if args.access_log == "off" else args.access_log
    return run(SidecarOptions(bootstrap=args.bootstrap or "", bootstrap_document=document,
                              concurrency=args.concurrency, access_log=access_log,
                              drain_timeout=args.drain_timeout, cache_dir=args.cache_dir,
                              initial_fetch_timeout=args.initial_fetch_timeout,
                              token_file=args.token_file or "", cert_dir=args.cert_dir or "",
                              ca_file=args.ca_file or ""))


def _pairs(text: str) -> dict[str, str]:
    out = {}
    for item in _list(text):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _list(text: str) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _register_sidecar(sub) -> None:
    p = sub.add_parser("sidecar", help="run the sidecar proxy")
    p.add_argument("--bootstrap", help="Envoy v3 Bootstrap (YAML or JSON)")
    p.add_argument("--concurrency", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--access-log", default="-",
                   help="'-' for stdout (default), a file path, or 'off'")
    p.add_argument("--drain-timeout", type=float, default=5.0,
                   help="seconds in-flight requests get on drain or SIGTERM")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/plait"),
                   help="where the last good xDS config is kept ('' to disable)")
    p.add_argument("--initial-fetch-timeout", type=float, default=3.0,
                   help="seconds to wait for the control plane before using the cache")
    s = p.add_argument_group("workload identity (mTLS)")
    s.add_argument("--token-file", metavar="FILE",
                   help="join token (plait token create --ns NS --sa SA) proving who this "
                        "sidecar is, to get its certificate from the control plane")
    s.add_argument("--cert-dir", metavar="DIR",
                   help="where the key (0600), certificate and trust bundle live "
                        "(default: under --cache-dir)")
    s.add_argument("--ca-file", metavar="FILE",
                   help="mesh trust bundle to verify an https control plane with before "
                        "the first certificate arrives")
    g = p.add_argument_group("steered by plait control (instead of --bootstrap)")
    g.add_argument("--xds", help="control plane xDS address HOST:PORT")
    g.add_argument("--registry", default="",
                   help="control plane API URL to register the app in, e.g. http://127.0.0.1:15080")
    g.add_argument("--app", help="service name of the app beside this sidecar")
    g.add_argument("--app-port", type=int, default=0, help="port of the local app")
    g.add_argument("--labels", default="", help="app labels, e.g. version=v1,zone=a")
    g.add_argument("--dependencies", default="", help="services the app calls (default all)")
    g.add_argument("--outbound-port", type=int, default=15001)
    g.add_argument("--inbound-port", type=int, default=15006)
    g.add_argument("--admin-port", type=int, default=15000)
    g.add_argument("--node-id", default="", help="default APP-INBOUNDPORT")
    g.add_argument("--instance-address", default="127.0.0.1",
                   help="address other sidecars reach this one's inbound listener at")
    g.add_argument("--protocol", default="http", choices=("http", "grpc", "tcp", "dubbo"))
    g.add_argument("--lease-ttl", type=float, default=None, metavar="SECONDS",
                   help="how long the registry keeps the app after heartbeats stop "
                        "(default 10; heartbeats go every third of it)")
    p.set_defaults(func=_sidecar)


def build_parser(*, sidecar_only: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plait", description="Plait service mesh")
    sub = parser.add_subparsers(dest="command", required=True)
    _register_sidecar(sub)
    if not sidecar_only:
        # Imported here: the sidecar's memory should not pay for the control plane's
        # client libraries (httpx, rich, pydantic models).
        from plait.cli import control_cmds

        control_cmds.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sidecar_only = bool(argv) and argv[0] == "sidecar"
    args = build_parser(sidecar_only=sidecar_only).parse_args(argv)
    if getattr(args, "concurrency", 1) < 1:
        print("plait: --concurrency must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:
        # `plait get ... | head`: the reader left; that is not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
