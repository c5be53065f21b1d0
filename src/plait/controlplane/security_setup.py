"""Assembling the control plane's security from `plait control`'s options.

`open_security(args)` opens the CA and the security tables, writes the bootstrap admin
token if asked, prepares the API's TLS, and returns a `SecuritySetup` the server wires in:
`api` for the app, `uvicorn_options()` for the server, `background()` for the loops
(CA upkeep: finishing a rotation whose overlap has passed; API certificate renewal), and
`close()`.

Options read from `args` (all optional but `data_dir`): insecure_dev, bootstrap_admin_token_file,
trust_domain, cert_ttl and ca_overlap (seconds; ca_overlap None = as long as cert_ttl,
0 = only by hand), ca_cert, ca_key, api_tls, api_cert, api_key, api_hostname (list), api_host.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from plait.core.errors import PlaitError
from plait.controlplane.apitls import ApiTls, TlsHttpToolsProtocol, default_hosts
from plait.controlplane.auth import Role, Security
from plait.controlplane.auth.db import open_db
from plait.controlplane.ca import Authority
from plait.security.files import write_private
from plait.security.spiffe import DEFAULT_TRUST_DOMAIN, check_trust_domain

CA_TICK = 1.0  # seconds between checks for a rotation's end of overlap


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class SecuritySetup:
    api: Security
    tls: ApiTls | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def uvicorn_options(self) -> dict[str, Any]:
        if self.tls is None:
            return {}
        context = self.tls.context
        return {"http": TlsHttpToolsProtocol, "ssl_context_factory": lambda _cfg, _dflt: context}

    def background(self) -> list[Callable[[], Any]]:
        loops: list[Callable[[], Any]] = [self._ca_upkeep]
        if self.tls is not None:
            loops.append(self.tls.run)
        return loops

    async def _ca_upkeep(self) -> None:
        while True:
            await asyncio.sleep(CA_TICK)
            if self.api.authority.tick():
                print("plait control: CA rotation overlap ended; the old root is no longer "
                      "trusted", file=sys.stderr)  # fmt: skip

    def close(self) -> None:
        for close in reversed(self._closers):
            close()


def _bootstrap_admin(security: Security, path: str) -> None:
    if security.tokens.has_admin():
        return
    text, token = security.tokens.create_operator(Role.ADMIN, created_by="bootstrap",
                                                  description="bootstrap admin")  # fmt: skip
    write_private(path, (text + "\n").encode())
    print(f"plait control: wrote the first admin token (id {token.id}) to {path}", file=sys.stderr)


def open_security(args: argparse.Namespace) -> SecuritySetup:
    """Raises PlaitError (or OSError) with a message fit for the operator."""
    data_dir = Path(args.data_dir)
    insecure = bool(getattr(args, "insecure_dev", False))
    api_tls = bool(getattr(args, "api_tls", False))
    api_host = getattr(args, "api_host", "127.0.0.1")
    if not (insecure or api_tls or _loopback(api_host)):
        raise PlaitError(f"the API on {api_host} would carry tokens in clear text: add --api-tls "
                         "(or listen on loopback)")  # fmt: skip
    if (getattr(args, "api_cert", None) or getattr(args, "api_key", None)) and not api_tls:
        raise PlaitError("--api-cert and --api-key need --api-tls")
    try:
        trust_domain = getattr(args, "trust_domain", None) or DEFAULT_TRUST_DOMAIN
        check_trust_domain(trust_domain)
    except ValueError as exc:
        raise PlaitError(f"--trust-domain: {exc}") from None
    cert_ttl = datetime.timedelta(seconds=getattr(args, "cert_ttl", None) or 86400.0)
    overlap_s = getattr(args, "ca_overlap", None)
    authority = Authority.open(
        data_dir, trust_domain=trust_domain, cert_ttl=cert_ttl,
        overlap=datetime.timedelta(seconds=overlap_s) if overlap_s else None,
        auto_finish=overlap_s != 0, ca_cert=getattr(args, "ca_cert", None),
        ca_key=getattr(args, "ca_key", None))
    db = open_db(data_dir)
    setup = SecuritySetup(Security.build(db, authority, required=not insecure))
    setup._closers.append(db.close)
    token_file = getattr(args, "bootstrap_admin_token_file", None)
    if token_file:
        _bootstrap_admin(setup.api, token_file)
    if insecure:
        print("plait control: --insecure-dev: the API accepts requests without credentials",
              file=sys.stderr)  # fmt: skip
    elif not setup.api.tokens.has_admin():
        print("plait control: no admin token exists; restart with "
              "--bootstrap-admin-token-file FILE to make one", file=sys.stderr)  # fmt: skip
    if api_tls:
        hosts = list(getattr(args, "api_hostname", None) or default_hosts(api_host))
        setup.tls = ApiTls(authority, data_dir, hosts=hosts, cert=getattr(args, "api_cert", None),
                           key=getattr(args, "api_key", None))  # fmt: skip
    return setup
