"""Security commands: `plait token`, `plait ca`, `plait audit`, and `plait control`'s
security options.

Like the other client commands they call the REST API (`$PLAIT_CONTROL`) with the
credentials of `plait.cli.credentials`. A created token is printed once, alone on stdout
(so `TOKEN=$(plait token create ...)` works); what it is goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import sys

import httpx

from plait.cli import credentials
from plait.cli.control_cmds import (CommandError, _base_url, _call, _console, _dump, _run,
                                    _table, _when)
from plait.model.duration import parse_duration


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _overlap(text: str) -> float:
    return 0.0 if text == "manual" else _duration(text)


def add_control_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("security")
    g.add_argument("--insecure-dev", action="store_true",
                   help="accept API requests without credentials (development only)")
    g.add_argument("--bootstrap-admin-token-file", metavar="FILE",
                   help="write a first admin token here (mode 0600) if no admin token exists")
    g.add_argument("--trust-domain", default="cluster.local",
                   help="SPIFFE trust domain of workload identities (default cluster.local)")
    g.add_argument("--cert-ttl", type=_duration, default=86400.0, metavar="DURATION",
                   help="workload certificate lifetime (default 24h)")
    g.add_argument("--ca-cert", metavar="FILE",
                   help="operator CA certificate (root or intermediate, then its chain)")
    g.add_argument("--ca-key", metavar="FILE", help="the operator CA's private key")
    g.add_argument("--ca-overlap", type=_overlap, default=None, metavar="DURATION",
                   help="how long both roots are trusted after 'plait ca rotate' "
                        "(default: the certificate lifetime; 'manual': until --finish)")
    g.add_argument("--api-tls", action="store_true",
                   help="serve the API over TLS (certificate from the mesh CA by default)")
    g.add_argument("--api-cert", metavar="FILE",
                   help="API server certificate chain (with --api-tls)")
    g.add_argument("--api-key", metavar="FILE", help="API server private key (with --api-tls)")
    g.add_argument("--api-hostname", action="append", metavar="NAME",
                   help="a name or address in the API certificate (repeatable; "
                        "default localhost, 127.0.0.1, ::1 and --api-host)")


def _expiry(ts: float | None) -> str:
    return "never" if ts is None else _when(ts)


def cmd_token_create(args: argparse.Namespace) -> int:
    if args.role and (args.ns or args.sa or args.service):
        print("error: give --role for an operator token, or --ns/--sa for a join token",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.role:
        body = {"kind": "operator", "role": args.role}
    elif args.ns and args.sa:
        body = {"kind": "join", "namespace": args.ns, "serviceAccount": args.sa,
                "services": args.service or []}  # fmt: skip
    else:
        print("error: give --role ROLE, or --ns NS and --sa SA", file=sys.stderr)
        return 2
    if args.ttl is not None:
        body["ttl"] = args.ttl
    if args.description:
        body["description"] = args.description
    made = _call("POST", "/api/v1/tokens", json=body)
    what = (f"{made['role']} operator token" if made["kind"] == "operator" else
            f"join token for ns/{made['namespace']}/sa/{made['serviceAccount']}")
    print(made["token"])
    print(f"{what}, id {made['id']}, expires {_expiry(made['expiresAt'])}; "
          "this is the only time it is shown", file=sys.stderr)  # fmt: skip
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    tokens = _call("GET", "/api/v1/tokens")["tokens"]
    if args.output != "table":
        _dump(tokens, args.output)
        return 0
    table = _table("ID", "KIND", "STATE", "ROLE/IDENTITY", "SERVICES", "EXPIRES", "CREATED BY")
    for t in tokens:
        who = t.get("role") or f"ns/{t['namespace']}/sa/{t['serviceAccount']}"
        table.add_row(t["id"], t["kind"], t["state"], who, ",".join(t.get("services", [])) or "-",
                      _expiry(t["expiresAt"]), t["createdBy"])  # fmt: skip
    _console().print(table)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    t = _call("DELETE", f"/api/v1/tokens/{args.id}")
    print(f"token {t['id']} revoked")
    return 0


def cmd_ca_status(args: argparse.Namespace) -> int:
    status = _call("GET", "/api/v1/ca")
    if args.output != "table":
        _dump(status, args.output)
        return 0
    print(f"trust domain {status['trustDomain']}, certificates live "
          f"{datetime.timedelta(seconds=status['certTtlSeconds'])}"
          + (", operator-provided CA" if status["operatorProvided"] else ""))
    rotation = status["rotation"]
    if rotation:
        until = rotation["overlapUntil"] or "'plait ca rotate --finish'"
        print(f"rotation in progress; the old root is dropped at {until}")
    table = _table("ROLE", "SUBJECT", "SHA256", "NOT AFTER")
    for root in status["roots"]:
        table.add_row(root["role"], root["subject"], root["sha256"][:16], root["notAfter"])
    _console().print(table)
    return 0


def cmd_ca_rotate(args: argparse.Namespace) -> int:
    status = _call("POST", "/api/v1/ca/rotate", json={"finish": args.finish})
    active = next(r for r in status["roots"] if r["role"] in ("active", "anchor"))
    if args.finish:
        print(f"rotation finished: only root {active['sha256'][:16]} is trusted")
    else:
        until = status["rotation"]["overlapUntil"] or "you run 'plait ca rotate --finish'"
        print(f"new root {active['sha256'][:16]} signs from now on; both roots are trusted "
              f"until {until}")
    return 0


def cmd_ca_bundle(args: argparse.Namespace) -> int:
    # The bundle is PEM, not JSON, so not through `_call`.
    try:
        options = credentials.request_options()
        response = httpx.get(_base_url() + "/api/v1/ca/bundle", timeout=10, **options)
    except credentials.CredentialsError as exc:
        raise CommandError("", str(exc)) from None
    except httpx.HTTPError as exc:
        hint = credentials.hint(error=str(exc))
        raise CommandError("", f"cannot reach the control plane: {exc}{hint}") from None
    if not response.is_success:
        hint = credentials.hint(response.status_code)
        raise CommandError("", f"HTTP {response.status_code} from the control plane{hint}")
    print(response.text, end="")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    query = {"after": args.after, "limit": args.limit}
    entries = _call("GET", "/api/v1/audit", params=query)["entries"]
    if args.output != "table":
        _dump(entries, args.output)
        return 0
    table = _table("SEQ", "WHEN", "ACTOR", "METHOD", "PATH", "STATUS", "RESOURCE")
    for e in entries:
        table.add_row(str(e["seq"]), _when(e["at"]), e["actor"], e["method"], e["path"],
                      str(e["status"]), e["resource"] or "-")  # fmt: skip
    _console().print(table)
    if args.diff:
        for e in entries:
            if e["diff"]:
                print(f"--- entry {e['seq']} ---\n{e['diff']}", end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    token = subparsers.add_parser("token", help="operator and join tokens (admin)")
    tsub = token.add_subparsers(dest="token_command", required=True)
    p = tsub.add_parser("create", help="create a token; it is printed once")
    p.add_argument("--role", choices=("viewer", "editor", "admin"), help="an operator token")
    p.add_argument("--ns", help="a join token for this namespace (with --sa)")
    p.add_argument("--sa", help="... and this service account")
    p.add_argument("--service", action="append", metavar="NAME",
                   help="a service the workload may register (repeatable; default: the --sa name)")
    p.add_argument("--ttl", type=_duration, metavar="DURATION",
                   help="lifetime (join tokens default 1h; operator tokens never expire)")
    p.add_argument("--description", default="")
    p.set_defaults(func=_run(cmd_token_create))
    p = tsub.add_parser("list", help="list tokens (never their secrets)")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    p.set_defaults(func=_run(cmd_token_list))
    p = tsub.add_parser("revoke", help="revoke a token by id")
    p.add_argument("id")
    p.set_defaults(func=_run(cmd_token_revoke))

    ca = subparsers.add_parser("ca", help="the mesh certificate authority")
    csub = ca.add_subparsers(dest="ca_command", required=True)
    p = csub.add_parser("status", help="roots and rotation state")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    p.set_defaults(func=_run(cmd_ca_status))
    p = csub.add_parser("rotate", help="start a root rotation (admin)")
    p.add_argument("--finish", action="store_true", help="drop the old root now")
    p.set_defaults(func=_run(cmd_ca_rotate))
    p = csub.add_parser("bundle", help="print the trust bundle (PEM)")
    p.set_defaults(func=_run(cmd_ca_bundle))

    p = subparsers.add_parser("audit", help="the audit log of changes (admin)")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="entries after this one")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--diff", action="store_true", help="also print each resource diff")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    p.set_defaults(func=_run(cmd_audit))
