"""Config center routes: apply YAML, read, delete, history and rollback of resources.

`POST /api/v1/apply` takes multi-document YAML and is all-or-nothing: every document is
validated before anything is written, and the writes happen in one store transaction.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from plait.core.errors import ConfigError
from plait.controlplane.store import Applied, Record, Store
from plait.model import ResourceKey, parse_documents, resolve_kind, to_dict

MAX_APPLY_BYTES = 4 * 1024 * 1024  # far above any hand-written config; bounds memory

_YAML_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)


def record_json(record: Record) -> dict[str, Any]:
    kind, namespace, name = record.key
    return {
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "version": record.version,
        "revision": record.revision,
        "updatedAt": record.updated_at,
        "deleted": record.deleted,
        "resource": to_dict(record.resource) if record.resource is not None else None,
    }


def applied_json(applied: Applied) -> dict[str, Any]:
    return {**record_json(applied.record), "changed": applied.changed}


def router(store: Store) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["resources"])

    def key(kind: str, namespace: str, name: str) -> ResourceKey:
        return ResourceKey(resolve_kind(kind), namespace, name)

    @api.post("/apply", openapi_extra=_YAML_BODY)
    async def apply(request: Request) -> dict[str, Any]:
        """Validate and store every resource of a multi-document YAML body, or none."""
        body = bytearray()
        async for chunk in request.stream():  # read no further than the limit
            body += chunk
            if len(body) > MAX_APPLY_BYTES:
                raise ConfigError("", f"body larger than {MAX_APPLY_BYTES} bytes")
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("", "body is not UTF-8 text") from None
        resources = parse_documents(text)
        if not resources:
            raise ConfigError("", "no resources in the input")
        applied = await store.put_many(resources)
        return {"revision": store.revision, "applied": [applied_json(a) for a in applied]}

    @api.get("/resources/{kind}")
    async def list_resources(kind: str, namespace: str | None = None) -> dict[str, Any]:
        records = await store.list(resolve_kind(kind), namespace)
        return {"kind": resolve_kind(kind), "items": [record_json(r) for r in records]}

    @api.get("/resources/{kind}/{namespace}/{name}")
    async def get_resource(kind: str, namespace: str, name: str) -> dict[str, Any]:
        return record_json(await store.get(key(kind, namespace, name)))

    @api.delete("/resources/{kind}/{namespace}/{name}")
    async def delete_resource(kind: str, namespace: str, name: str) -> dict[str, Any]:
        return record_json(await store.delete(key(kind, namespace, name)))

    @api.get("/resources/{kind}/{namespace}/{name}/history")
    async def history(kind: str, namespace: str, name: str) -> dict[str, Any]:
        records = await store.history(key(kind, namespace, name))
        return {"items": [record_json(r) for r in records]}

    @api.post("/resources/{kind}/{namespace}/{name}/rollback")
    async def rollback(
        kind: str, namespace: str, name: str, body: RollbackRequest
    ) -> dict[str, Any]:
        """Make an old version's content current again, as a new version."""
        return applied_json(await store.rollback(key(kind, namespace, name), body.version))

    return api
