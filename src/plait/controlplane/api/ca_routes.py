"""CA routes: workload certificates from CSRs, the trust bundle, status and rotation.

`POST /api/v1/ca/certificates` takes the CSR's PEM text as the body. The identity is the
caller's (its join token or its client certificate), never the CSR's: see
`plait.controlplane.ca.csr`. A join token's services are remembered for the identity, so
its later mTLS renewals may register the same services.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from plait.core.errors import ConfigError
from plait.controlplane.auth import Kind, Security, principal_of
from plait.controlplane.auth.audit import note
from plait.controlplane.auth.guards import Forbidden
from plait.controlplane.ca import IdentityRefused, check_csr
from plait.controlplane.ca.csr import MAX_CSR_BYTES
from plait.security.renewal import renew_at

PEM_TYPE = "application/x-pem-file"


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    finish: bool = False


def router(security: Security) -> APIRouter:
    api = APIRouter(prefix="/api/v1/ca", tags=["ca"])
    ca = security.authority
    counters = security.counters

    @api.post("/certificates", status_code=201, openapi_extra={"requestBody": {
        "required": True, "content": {"application/pkcs10": {"schema": {"type": "string"}}}}})
    async def issue(request: Request) -> dict[str, Any]:
        """Sign the caller's CSR (PEM body) for the caller's own SPIFFE ID."""
        principal = principal_of(request)
        if principal is None or principal.spiffe_id is None:
            raise Forbidden("", "certificates are issued to workloads: present a join token "
                                "or a workload certificate")  # fmt: skip
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_CSR_BYTES:
                break
        uri = principal.spiffe_id.uri
        try:
            key = check_csr(bytes(body), spiffe_uri=uri)
        except (ConfigError, IdentityRefused):
            counters.inc("ca_csr_refused")
            raise
        issued = ca.issue_workload(key, spiffe_uri=uri)
        if principal.kind is Kind.JOIN:
            security.workloads.remember(principal.spiffe_id, principal.services,
                                        token_id=principal.actor)  # fmt: skip
        counters.inc("ca_certificates_issued")
        serial = format(issued.cert.serial_number, "x")
        note(f"certificate {uri} serial {serial}")
        return {
            "spiffeId": uri,
            "serial": serial,
            "notBefore": issued.cert.not_valid_before_utc.isoformat(),
            "notAfter": issued.cert.not_valid_after_utc.isoformat(),
            "renewAt": renew_at(issued.cert).isoformat(),
            "certificateChain": issued.chain_pem,
            "trustBundle": issued.bundle_pem,
        }

    @api.get("/bundle", response_class=Response)
    async def bundle() -> Response:
        """The trust bundle: every root the mesh trusts now, PEM."""
        return Response(ca.bundle_pem, media_type=PEM_TYPE)

    @api.get("")
    async def status() -> dict[str, Any]:
        return ca.status()

    @api.post("/rotate")
    async def rotate(body: RotateRequest) -> dict[str, Any]:
        """Start a root rotation, or with `{"finish": true}` end the one in progress."""
        result = ca.finish() if body.finish else ca.rotate()
        note("ca root " + ("rotation finished" if body.finish else "rotation started"))
        return result

    return api
