"""The control plane's REST API (FastAPI; schema at `/openapi.json`).

Built by `create_app` from the parts it serves, so tests and `plait control` assemble the
same app. Proxy status belongs to the push side; it is read through a callable so the API
does not depend on how pushes are tracked.
"""

from __future__ import annotations

from typing import Any, Callable

from fastapi import FastAPI

from plait.controlplane.alarms import AlarmHub
from plait.controlplane.api import errors, governance_routes, registry_routes, resources
from plait.controlplane.registry import Registry
from plait.controlplane.store import Store

# Returns one dict per connected proxy (whatever the push side reports about it).
ProxyStatusSource = Callable[[], list[dict]]


def _no_proxies() -> list[dict]:
    return []


def create_app(
    *, store: Store, registry: Registry, proxy_status: ProxyStatusSource = _no_proxies,
    alarms: AlarmHub | None = None,
) -> FastAPI:
    app = FastAPI(title="Plait control plane", version="v1", docs_url=None, redoc_url=None)
    errors.install(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "revision": store.revision}

    @app.get("/api/v1/proxies", tags=["proxies"])
    async def proxies() -> dict[str, Any]:
        return {"proxies": list(proxy_status())}

    app.include_router(resources.router(store))
    app.include_router(registry_routes.router(registry))
    if alarms is not None:  # events, telemetry and alarms (plait.controlplane.alarms)
        app.include_router(governance_routes.router(alarms))
    return app
