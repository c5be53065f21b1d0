"""The control plane's view of the mesh, as the push side reads it.

The config center and the registry implement `MeshView`; the xDS push (translator and ADS
server) reads only through it, so either side can change its storage without touching the
other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass(frozen=True, slots=True)
class Instance:
    """One registered endpoint of a service."""

    service: str  # e.g. "catalog" (the host name callers use)
    address: str
    port: int
    protocol: str = "http"  # http | grpc | tcp | dubbo
    labels: dict[str, str] = field(default_factory=dict)  # app, version, zone, ...
    instance_id: str = ""  # stable id, default f"{service}-{address}:{port}"
    healthy: bool = True
    # The SPIFFE ID of the workload that registered it, set by the control plane from the
    # caller's credentials (never from the request); "" when registered without one. Callers
    # use mTLS to the instance and accept only this identity (push.security).
    spiffe_id: str = ""


class MeshView(Protocol):
    def resources(self, kind: str) -> list:
        """Current resources of a kind ("VirtualService", "DestinationRule", "ServiceEntry"),
        as validated `plait.model` objects."""

    def instances(self) -> dict[str, list[Instance]]:
        """Service name → its live instances."""

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (on the event loop) after any config or registry change.
        Returns a function that unsubscribes."""
