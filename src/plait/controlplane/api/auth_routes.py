"""Token, audit and counter routes (admins only, except counters: viewers).

A token's text is in the answer to its creation and nowhere else, ever: it is not stored
(only its hash), not logged, and not listed.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from plait.controlplane.auth import Role, Security, principal_of
from plait.controlplane.auth.audit import note
from plait.controlplane.auth.tokens import MAX_TTL


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["operator", "join"]
    role: Literal["viewer", "editor", "admin"] | None = None
    namespace: str | None = None
    service_account: str | None = None
    services: list[str] = Field(default_factory=list, max_length=100)
    ttl: float | None = Field(default=None, gt=0, le=MAX_TTL)
    description: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> TokenRequest:
        if self.kind == "operator":
            if self.role is None:
                raise ValueError("an operator token needs a role")
            if self.namespace or self.service_account or self.services:
                raise ValueError("namespace, serviceAccount and services are for join tokens")
        else:
            if not (self.namespace and self.service_account):
                raise ValueError("a join token needs namespace and serviceAccount")
            if self.role is not None:
                raise ValueError("a role is for operator tokens")
        return self


def router(security: Security) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["security"])
    tokens = security.tokens

    @api.post("/tokens", status_code=201)
    async def create(body: TokenRequest, request: Request) -> dict[str, Any]:
        """Create a token. The answer holds the token text; it is never shown again."""
        principal = principal_of(request)
        by = principal.actor if principal else "anonymous"
        if body.kind == "operator":
            text, token = tokens.create_operator(Role.parse(body.role or ""), created_by=by,
                                                 ttl=body.ttl, description=body.description)  # fmt: skip
        else:
            text, token = tokens.create_join(
                namespace=body.namespace or "", account=body.service_account or "",
                services=body.services, created_by=by, ttl=body.ttl, description=body.description)
        note(f"token {token.id}")
        return {"token": text, **token.json(now=time.time())}

    @api.get("/tokens")
    async def list_tokens() -> dict[str, Any]:
        now = time.time()
        return {"tokens": [t.json(now=now) for t in tokens.list()]}

    @api.delete("/tokens/{token_id}")
    async def revoke(token_id: str) -> dict[str, Any]:
        token = tokens.revoke(token_id)
        note(f"token {token.id}")
        return token.json(now=time.time())

    @api.get("/audit")
    async def audit_log(after: int = Query(0, ge=0),
                        limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:  # fmt: skip
        """Audit entries after sequence number `after`, oldest first."""
        return {"entries": security.audit.entries(after=after, limit=limit)}

    @api.get("/auth/counters")
    async def counters() -> dict[str, Any]:
        return {"counters": security.counters.snapshot()}

    return api
