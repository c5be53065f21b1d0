"""Checks that need the request itself, beyond the policy table.

`registry_guard(registry)` is a FastAPI dependency for the registry routes: a workload
may register only instances of its own services (see `identities`), must not take over
an instance id held by another service, and may renew or remove only leases of its own
services. Operators with the editor role pass (the policy already checked the role).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from plait.core.errors import PlaitError
from plait.controlplane.auth import audit
from plait.controlplane.auth.principal import Principal
from plait.controlplane.registry import Registry


class Forbidden(PlaitError):
    """Authenticated, but not allowed to do this (HTTP 403). `path` names the field."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def principal_of(request: Request) -> Principal | None:
    return request.scope.get("state", {}).get("principal")


def registry_guard(registry: Registry):
    async def guard(request: Request) -> None:
        principal = principal_of(request)
        if request.method == "GET":
            return
        if request.method == "POST":
            body: Any = await request.json() if await request.body() else None
            service = body.get("service") if isinstance(body, dict) else None
            if isinstance(service, str):
                audit.note(f"service {service}")
            if principal is None or not principal.is_workload or not isinstance(service, str):
                return  # operators pass; a malformed body gets the route's 400
            if service not in principal.services:
                raise Forbidden("service", f"{principal.actor} may register only "
                                           f"{', '.join(principal.services)}")  # fmt: skip
            instance_id = body.get("instanceId") or body.get("instance_id")
            for lease in registry.leases():
                if lease.instance.instance_id == instance_id and lease.instance.service != service:
                    raise Forbidden("instanceId", f"instance id {instance_id!r} belongs to "
                                                  f"service {lease.instance.service}")  # fmt: skip
            return
        lease = registry.lease(request.path_params.get("lease_id", ""))
        if lease is not None:
            audit.note(f"service {lease.instance.service}")
        if principal is None or not principal.is_workload or lease is None:
            return  # an unknown lease gets the route's 404
        if lease.instance.service not in principal.services:
            raise Forbidden("", f"lease belongs to service {lease.instance.service}, "
                                f"not to {principal.actor}")  # fmt: skip

    return guard
