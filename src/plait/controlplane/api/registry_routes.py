"""Registry routes: register an instance under a lease, heartbeat, deregister, list.

A registration returns a lease id and its TTL; the caller renews with `PUT` on the lease
at a fraction of the TTL (a third is customary, as with etcd keep-alives). When renewals
stop, the lease expires and the instance leaves the registry. A renewal may carry
`{"healthy": false}` (or true): a sidecar whose app keeps failing takes its instance out
of its callers' endpoints that way, and puts it back when the app recovers.

Who registered an instance is recorded on it (secure naming, as in Istio): a workload
that authenticated with its certificate or join token gets its SPIFFE ID on the instance,
and callers' sidecars then use mTLS to the instance and accept only that identity there.
The identity comes from the credentials alone; labels under `security.plait.io/` in the
body, which used to claim mTLS, are dropped. Only a caller the API did not authenticate
(`--insecure-dev`, or an app built without security) keeps them, and with them the old
rule: mTLS to a labelled instance, accepting any certificate of the mesh.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from plait.controlplane.auth import Kind, Principal, principal_of
from plait.controlplane.mesh import Instance
from plait.controlplane.registry import DEFAULT_TTL, Lease, Registry
from plait.security.labels import SECURITY_PREFIX

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


def registrant(principal: Principal | None, labels: dict[str, str]) -> tuple[dict, str]:
    """(the labels to keep, the SPIFFE ID to record) for an instance that `principal`
    registers with `labels`. Without a principal (no authentication) the labels are kept
    as sent; otherwise `security.plait.io/` labels go, and a workload's own identity is
    recorded (an operator's registration has none: callers reach it in plaintext)."""
    if principal is None or principal.kind is Kind.ANONYMOUS:
        return dict(labels), ""
    kept = {k: v for k, v in labels.items() if not k.startswith(SECURITY_PREFIX)}
    spiffe = principal.spiffe_id if principal.is_workload else None
    return kept, spiffe.uri if spiffe is not None else ""


def router(registry: Registry) -> APIRouter:
    api = APIRouter(prefix="/api/v1/registry", tags=["registry"])

    @api.post("/instances", status_code=201)
    async def register(body: RegisterRequest, request: Request) -> dict[str, Any]:
        labels, spiffe_id = registrant(principal_of(request), body.labels)
        instance = Instance(
            service=body.service,
            address=body.address,
            port=body.port,
            protocol=body.protocol,
            labels=labels,
            instance_id=body.instance_id,
            healthy=body.healthy,
            spiffe_id=spiffe_id,
        )
        lease = registry.register(instance, ttl=body.ttl)
        return {**lease_json(registry, lease), "spiffeId": lease.instance.spiffe_id}

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
                    "spiffeId": inst.spiffe_id,
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
