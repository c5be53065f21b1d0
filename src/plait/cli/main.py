"""`plait`: one command for every part of the mesh.

Each part registers its own subcommands (keeps this file a table of contents).
"""

from __future__ import annotations

import argparse
import sys


def _sidecar(args: argparse.Namespace) -> int:
    from plait.dataplane.sidecar import SidecarOptions, run

    access_log = None if args.access_log == "off" else args.access_log
    return run(SidecarOptions(bootstrap=args.bootstrap, concurrency=args.concurrency,
                              access_log=access_log, drain_timeout=args.drain_timeout))


def _register_sidecar(sub) -> None:
    p = sub.add_parser("sidecar", help="run the sidecar proxy")
    p.add_argument("--bootstrap", required=True, help="Envoy v3 Bootstrap (YAML or JSON)")
    p.add_argument("--concurrency", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--access-log", default="-",
                   help="'-' for stdout (default), a file path, or 'off'")
    p.add_argument("--drain-timeout", type=float, default=5.0,
                   help="seconds in-flight requests get on drain or SIGTERM")
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
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
