"""The control plane's REST API (FastAPI; schema at `/openapi.json`).

Built by `create_app` from the parts it serves, so tests and `plait control` assemble the
same app. Proxy status belongs to the push side; it is read through a callable so the API
does not depend on how pushes are tracked.

With `security` (what `plait control` always passes), every request crosses
`AuthMiddleware` (authentication, the policy table, 401/403, the audit log), config
writes go through `AuditedStore` so each change is logged with its diff, the registry
routes get the workload ownership guard, and the CA, token and audit routes are served.
Without it (unit tests of the plain routes) the API is open, as before.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from plait.controlplane.alarms import AlarmHub
from plait.controlplane.api import (auth_routes, ca_routes, errors, governance_routes,
                                    registry_routes, resources)
from plait.controlplane.auth import (AuditedStore, AuthMiddleware, Forbidden, Security,
                                     principal_of, registry_guard)
from plait.controlplane.ca import IdentityRefused
from plait.controlplane.registry import Registry
from plait.controlplane.store import Store

log = logging.getLogger("plait.control.auth")

# Returns one dict per connected proxy (whatever the push side reports about it).
ProxyStatusSource = Callable[[], list[dict]]


def _no_proxies() -> list[dict]:
    return []


def _forbidden_handler(security: Security):
    async def forbidden(request: Request, exc: Exception) -> JSONResponse:
        path = exc.path if isinstance(exc, Forbidden) else "csr"
        reason = exc.reason if isinstance(exc, Forbidden) else str(exc)
        principal = principal_of(request)
        security.counters.inc("auth_forbidden")
        log.warning("403 %s %s by %s: %s", request.method, request.url.path,
                    principal.actor if principal else "?", reason)  # fmt: skip
        return errors.error_response(403, path, reason)

    return forbidden


def create_app(
    *, store: Store, registry: Registry, proxy_status: ProxyStatusSource = _no_proxies,
    alarms: AlarmHub | None = None, security: Security | None = None,
) -> FastAPI:
    """The API app. `alarms` (an `AlarmHub`) adds the governance routes; `security` turns
    on authentication, authorization and the audit log (see the module note)."""
    app = FastAPI(title="Plait control plane", version="v1", docs_url=None, redoc_url=None)
    errors.install(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "revision": store.revision}

    @app.get("/api/v1/proxies", tags=["proxies"])
    async def proxies() -> dict[str, Any]:
        return {"proxies": list(proxy_status())}

    if alarms is not None:  # events, telemetry and alarms (plait.controlplane.alarms)
        app.include_router(governance_routes.router(alarms))
    if security is None:
        app.include_router(resources.router(store))
        app.include_router(registry_routes.router(registry))
        return app

    app.add_exception_handler(Forbidden, _forbidden_handler(security))
    app.add_exception_handler(IdentityRefused, _forbidden_handler(security))
    app.include_router(resources.router(AuditedStore(store)))
    app.include_router(registry_routes.router(registry),
                       dependencies=[Depends(registry_guard(registry))])  # fmt: skip
    app.include_router(ca_routes.router(security))
    app.include_router(auth_routes.router(security))
    app.add_middleware(AuthMiddleware, security=security)
    return app
