"""Registry routes: register an instance under a lease, heartbeat, deregister, list.

A registration returns a lease id and its TTL; the caller renews with `PUT` on the lease
at a fraction of the TTL (a third is customary, as with etcd keep-alives). When renewals
stop, the lease expires and the instance leaves the registry. A renewal may carry
`{"healthy": false}` (or true): a sidecar whose app keeps failing takes its instance out
of its callers' endpoints that way, and puts it back when the app recovers.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from plait.controlplane.mesh import Instance
from plait.controlplane.registry import DEFAULT_TTL, Lease, Registry

MAX_TTL = 3600.0


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)
    service: str = Field(min_length=1, max_length=253, pattern=r"^\S+$")
    address: str = Field(min_length=1, max_length=253, pattern=r"^\S+$")
    port: int = Field(ge=1, le=65535)
    protocol: Literal["http", "grpc", "tcp", "dubbo"] = "http"
    labels: dict[str, str] = Field(default_factory=dict)
    instance_id: str = Field(default="", max_length=253)
    healthy: bool = True
    ttl: float = Field(default=DEFAULT_TTL, gt=0, le=MAX_TTL)


class HeartbeatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    healthy: bool | None = None


def lease_json(registry: Registry, lease: Lease) -> dict[str, Any]:
    return {
        "leaseId": lease.lease_id,
        "instanceId": lease.instance.instance_id,
        "ttl": lease.ttl,
        "expiresIn": round(registry.remaining(lease), 3),
    }


def router(registry: Registry) -> APIRouter:
    api = APIRouter(prefix="/api/v1/registry", tags=["registry"])

    @api.post("/instances", status_code=201)
    async def register(body: RegisterRequest) -> dict[str, Any]:
        instance = Instance(
            service=body.service,
            address=body.address,
            port=body.port,
            protocol=body.protocol,
            labels=dict(body.labels),
            instance_id=body.instance_id,
            healthy=body.healthy,
        )
        return lease_json(registry, registry.register(instance, ttl=body.ttl))

    @api.put("/leases/{lease_id}")
    async def heartbeat(lease_id: str, body: HeartbeatRequest | None = None) -> dict[str, Any]:
        healthy = body.healthy if body is not None else None
        lease = registry.heartbeat(lease_id, healthy=healthy)
        return {**lease_json(registry, lease), "healthy": lease.instance.healthy}

    @api.delete("/leases/{lease_id}")
    async def deregister(lease_id: str) -> dict[str, Any]:
        instance = registry.deregister(lease_id)
        return {"leaseId": lease_id, "instanceId": instance.instance_id}

    @api.get("/services")
    async def services() -> dict[str, Any]:
        by_service: dict[str, list[dict[str, Any]]] = {}
        for lease in registry.leases():
            inst = lease.instance
            by_service.setdefault(inst.service, []).append(
                {
                    "instanceId": inst.instance_id,
                    "address": inst.address,
                    "port": inst.port,
                    "protocol": inst.protocol,
                    "labels": inst.labels,
                    "healthy": inst.healthy,
                    **lease_json(registry, lease),
                }
            )
        return {
            "services": [
                {
                    "name": name,
                    "instances": items,
                    "healthy": sum(1 for i in items if i["healthy"]),
                    "total": len(items),
                }
                for name, items in sorted(by_service.items())
            ]
        }

    return api
