"""`plait`: one command, subcommands registered by each part of the mesh."""

from __future__ import annotations

import argparse

from plait.cli import control_cmds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plait", description="Plait service mesh")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    control_cmds.register(subparsers)
    # sidecar subcommand: registered by plait.dataplane
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
