"""The API's security edge, an ASGI middleware in front of every route.

For each HTTP request: look up what the path needs (`policy`), authenticate the caller
(`Security.authenticate`), answer 401 (no or bad credentials) or 403 (not allowed) with
the API's JSON error shape and a counter, and otherwise pass the request on with the
principal in `request.state.principal`. Requests that change something run inside an
`AuditContext` and are written to the audit log once answered; heartbeats on registry
leases and the events and telemetry sidecars report are not changes and are not logged
(a sidecar sends them every few seconds).

Log lines name a token by its id, never its secret, and never echo a header.
"""

from __future__ import annotations

import json
import logging
import re
import ssl

from plait.controlplane.auth import audit
from plait.controlplane.auth.policy import Need, need_of, refusal
from plait.controlplane.auth.security import Security, Unauthenticated

log = logging.getLogger("plait.control.auth")

_READS = {"GET", "HEAD", "OPTIONS"}
_NOT_CHANGES = re.compile(r"PUT /api/v1/registry/leases/[^/]+|POST /api/v1/(events|telemetry)")


def client_cert_der(scope: dict) -> bytes | None:
    """The verified client certificate of a TLS connection (ASGI "tls" extension)."""
    chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or []
    return ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None


async def _error(send, status: int, reason: str, *, headers: list | None = None) -> None:
    body = json.dumps({"error": {"path": "", "reason": reason}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class AuthMiddleware:
    def __init__(self, app, *, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        need = need_of(method, path)
        if need is Need.PUBLIC:
            return await self.app(scope, receive, send)
        counters = self.security.counters
        authorization = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                authorization = value.decode("latin-1")
        try:
            principal = self.security.authenticate(authorization, client_cert_der(scope))
        except Unauthenticated as exc:
            counters.inc(exc.counter)
            log.warning("401 %s %s: %s", method, path, exc.reason)
            return await _error(send, 401, exc.reason,
                                headers=[(b"www-authenticate", b'Bearer realm="plait"')])  # fmt: skip
        reason = refusal(principal, need)
        if reason is not None:
            counters.inc("auth_forbidden")
            log.warning("403 %s %s by %s: %s", method, path, principal.actor, reason)
            return await _error(send, 403, reason)
        scope.setdefault("state", {})["principal"] = principal
        if method in _READS or _NOT_CHANGES.fullmatch(f"{method} {path}"):
            return await self.app(scope, receive, send)
        await self._audited(scope, receive, send, principal)

    async def _audited(self, scope, receive, send, principal) -> None:
        ctx = audit.AuditContext(principal)
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        reset = audit.current.set(ctx)
        try:
            await self.app(scope, receive, send_status)
        finally:
            audit.current.reset(reset)
            if status < 400:
                self.security.audit.record(ctx, method=scope["method"], path=scope["path"],
                                           status=status)  # fmt: skip
