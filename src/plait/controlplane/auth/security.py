"""The control plane's security parts in one object, and how a request is authenticated.

`Security` is built once by the server and handed to the API. `authenticate` turns the
request's credentials into a `Principal`:

1. `Authorization: Bearer <token>`: an operator token (its role) or a join token (the
   workload identity it grants). A header that is present but bad is a 401, even if a
   client certificate is also present.
2. Otherwise a TLS client certificate (API over TLS only): already verified against the
   mesh bundle during the handshake; its SPIFFE ID must be in this mesh's trust domain.
3. Otherwise nobody: a 401, or the anonymous admin under `--insecure-dev`.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field

from plait.controlplane.auth.audit import AuditLog
from plait.controlplane.auth.counters import Counters
from plait.controlplane.auth.identities import WorkloadServices
from plait.controlplane.auth.principal import ANONYMOUS_ADMIN, Kind, Principal
from plait.controlplane.auth.tokens import TokenRejected, TokenStore
from plait.controlplane.ca import Authority
from plait.security.spiffe import SpiffeId, spiffe_id_of

log = logging.getLogger("plait.control.auth")


class Unauthenticated(Exception):
    """No usable credentials (HTTP 401). `reason` is safe to show and to log."""

    def __init__(self, reason: str, counter: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.counter = counter


@dataclass
class Security:
    db: sqlite3.Connection
    tokens: TokenStore
    audit: AuditLog
    authority: Authority
    workloads: WorkloadServices
    required: bool = True  # False under --insecure-dev: no credentials = anonymous admin
    counters: Counters = field(default_factory=Counters)

    @classmethod
    def build(cls, db: sqlite3.Connection, authority: Authority, *, required: bool) -> Security:
        return cls(db, TokenStore(db), AuditLog(db), authority, WorkloadServices(db),
                   required=required)  # fmt: skip

    def authenticate(self, authorization: str | None, client_cert_der: bytes | None) -> Principal:
        """The caller, from its Authorization header and TLS client certificate."""
        if authorization is not None:
            return self._bearer(authorization)
        if client_cert_der is not None:
            return self._certificate(client_cert_der)
        if not self.required:
            return ANONYMOUS_ADMIN
        raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>' "
                              "or a workload client certificate", "auth_missing")

    def _bearer(self, header: str) -> Principal:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'",
                                  "auth_malformed")  # fmt: skip
        try:
            token = self.tokens.verify(value.strip())
        except TokenRejected as exc:
            counter = "auth_" + exc.reason.replace(" ", "_")
            who = f" (token id {exc.token_id})" if exc.token_id else ""
            raise Unauthenticated(f"{exc.reason}{who}", counter) from None
        if token.kind == "operator":
            return Principal(Kind.OPERATOR, token.id, role=token.role)
        spiffe = SpiffeId(self.authority.trust_domain, token.namespace or "", token.account or "")
        services = token.services or (spiffe.service_account,)
        return Principal(Kind.JOIN, token.id, spiffe_id=spiffe, services=services)

    def _certificate(self, der: bytes) -> Principal:
        try:
            spiffe = spiffe_id_of(der)
        except ValueError as exc:
            raise Unauthenticated(f"client certificate: {exc}", "auth_bad_certificate") from None
        if spiffe.trust_domain != self.authority.trust_domain:
            raise Unauthenticated(f"client certificate is for trust domain "
                                  f"{spiffe.trust_domain!r}", "auth_bad_certificate")  # fmt: skip
        return Principal(Kind.WORKLOAD, spiffe.uri, spiffe_id=spiffe,
                         services=self.workloads.services_of(spiffe))  # fmt: skip
