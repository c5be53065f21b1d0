"""Registers the sidecar's app in the control plane's registry and keeps its lease alive.

The instance registered is where other sidecars reach this app: the sidecar's inbound
listener. Heartbeats go at a third of the TTL (as etcd keep-alives do); a lease the
registry has forgotten (404, e.g. after a control-plane restart) is registered anew; a
clean stop deregisters. Failures are counted and retried, never fatal: an unreachable
control plane must not stop the data plane.

The instance's health goes with every heartbeat (`{"healthy": bool}`), and a change
(`set_healthy`, from the telemetry reporter when the local app keeps failing or recovers)
is sent at once rather than at the next beat; the registry's push then drops an unhealthy
instance from its callers' endpoints, or brings it back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from plait.dataplane.http.client import ClientError, request_json


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    registry: str  # control plane API base URL, e.g. http://127.0.0.1:15080
    service: str
    address: str
    port: int
    protocol: str = "http"
    labels: tuple[tuple[str, str], ...] = ()
    instance_id: str = ""
    ttl: float = 10.0


class Registration:
    def __init__(self, spec: InstanceSpec, *, auth=None) -> None:
        self.spec = spec
        self.auth = auth  # credentials for the control plane (http.client.request's auth)
        self.lease_id = ""
        self.registered = asyncio.Event()
        self.failures = 0
        self.last_error = ""
        self.healthy = True
        self._changed = asyncio.Event()

    def set_healthy(self, healthy: bool) -> None:
        """Report the local app healthy or not; sent with the next heartbeat, now."""
        if healthy != self.healthy:
            self.healthy = healthy
            self._changed.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep until the next heartbeat is due or the health changed."""
        try:
            await asyncio.wait_for(self._changed.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        self._changed.clear()

    async def run(self) -> None:
        """Register, then heartbeat until cancelled; deregisters on the way out."""
        spec = self.spec
        try:
            while True:
                try:
                    if not self.lease_id:
                        await self._register()
                    else:
                        status, _ = await request_json(
                            "PUT", f"{spec.registry}/api/v1/registry/leases/{self.lease_id}",
                            {"healthy": self.healthy}, auth=self.auth)
                        if status == 404:
                            self.lease_id = ""
                            continue
                        if status >= 300:
                            raise ClientError(f"heartbeat answered {status}")
                except ClientError as exc:
                    self.failures += 1
                    self.last_error = str(exc)
                    await asyncio.sleep(min(1.0, spec.ttl / 3))
                    continue
                await self._pause(spec.ttl / 3)
        finally:
            await self._deregister()

    async def _register(self) -> None:
        spec = self.spec
        status, body = await request_json("POST", f"{spec.registry}/api/v1/registry/instances", {
            "service": spec.service, "address": spec.address, "port": spec.port,
            "protocol": spec.protocol, "labels": dict(spec.labels),
            "instanceId": spec.instance_id, "ttl": spec.ttl, "healthy": self.healthy},
            auth=self.auth)
        if status != 201 or "leaseId" not in body:
            raise ClientError(f"register answered {status}: {body}")
        self.lease_id = body["leaseId"]
        self.registered.set()

    async def _deregister(self) -> None:
        if not self.lease_id:
            return
        try:
            await request_json(
                "DELETE", f"{self.spec.registry}/api/v1/registry/leases/{self.lease_id}",
                timeout=2.0, auth=self.auth)
        except ClientError:
            pass  # the lease will expire on its own
        self.lease_id = ""
