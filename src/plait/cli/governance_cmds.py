"""Governance commands: `plait events` and `plait alarms`.

Thin clients of `GET /api/v1/events` and `GET /api/v1/alarms`, with the same conventions
as the other control plane commands (`$PLAIT_CONTROL`, `-o table|yaml|json`, errors as
`error: <path>: <reason>` with exit code 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from plait.cli.control_cmds import _call, _console, _dump, _run, _table, _when
from plait.model.alarm_rule import EVENT_TYPES


def _detail(detail: dict[str, Any]) -> str:
    return ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                    for k, v in sorted(detail.items())) or "-"  # fmt: skip


def cmd_events(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("service", args.service), ("type", args.type),
                                ("limit", args.limit)) if v is not None}  # fmt: skip
    events = _call("GET", "/api/v1/events", params=params)["events"]
    if args.output != "table":
        _dump(events, args.output)
        return 0
    if not events:
        print("no events", file=sys.stderr)
        return 0
    table = _table("RECEIVED", "TYPE", "SERVICE", "CLUSTER", "HOST", "NODE", "DETAIL")
    for e in events:
        table.add_row(_when(e["receivedAt"]), e["type"], e["service"], e["cluster"] or "-",
                      e["host"] or "-", e["nodeId"], _detail(e["detail"]))  # fmt: skip
    _console().print(table)
    return 0


def _value(alarm: dict[str, Any]) -> str:
    if alarm["condition"] == "errorRate":
        return (f"{alarm['value']:.3f}>={alarm['threshold']:g} "
                f"({alarm['errors']}/{alarm['requests']} in {alarm['window']:g}s)")  # fmt: skip
    event = alarm.get("event") or {}
    return str(event.get("type", "-")) + (f"@{event['host']}" if event.get("host") else "")


def cmd_alarms(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("service", args.service), ("rule", args.rule),
                                ("limit", args.limit)) if v is not None}  # fmt: skip
    alarms = _call("GET", "/api/v1/alarms", params=params)["alarms"]
    if args.output != "table":
        _dump(alarms, args.output)
        return 0
    if not alarms:
        print("no alarms", file=sys.stderr)
        return 0
    table = _table("ID", "FIRED", "RULE", "SERVICE", "CONDITION", "VALUE", "DELIVERY",
                   "ATTEMPTS", "LAST")  # fmt: skip
    for a in alarms:
        d = a["delivery"]
        last = str(d["lastStatus"]) if d["lastStatus"] is not None else (d["lastError"] or "-")
        table.add_row(str(a["id"]), _when(a["firedAt"]),
                      f"{a['rule']['namespace']}/{a['rule']['name']}", a["service"],
                      a["condition"], _value(a), d["state"], str(d["attempts"]), last)  # fmt: skip
    _console().print(table)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `events` and `alarms`; each sets `func(args) -> exit code`."""
    p = subparsers.add_parser("events", help="recent governance events from the sidecars")
    p.add_argument("--service")
    p.add_argument("--type", choices=EVENT_TYPES)
    p.add_argument("--limit", type=int, help="newest N (default 100)")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    p.set_defaults(func=_run(cmd_events))

    p = subparsers.add_parser("alarms", help="fired alarms and their webhook delivery")
    p.add_argument("--service")
    p.add_argument("--rule", help="AlarmRule name")
    p.add_argument("--limit", type=int, help="newest N (default 100)")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    p.set_defaults(func=_run(cmd_alarms))
