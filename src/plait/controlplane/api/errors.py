"""Every API error has one shape: `{"error": {"path": ..., "reason": ...}}`.

`path` names the offending field (`spec.http[0].route[1].weight`, or a request field such
as `port`), empty when the whole request is at fault. Status codes: 400 invalid input,
404 no such resource/version/lease, 409 conflict with the current state.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from plait.core.errors import ConfigError
from plait.controlplane.store import ConflictError, NotFoundError
from plait.model import DocumentError
from plait.model.parse import format_path


def error_response(status: int, path: str, reason: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": {"path": path, "reason": reason, **extra}}, status_code=status)


async def _config_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConfigError)
    extra = {"document": exc.document} if isinstance(exc, DocumentError) else {}
    return error_response(400, exc.path, exc.reason, **extra)


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "", str(exc))


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return error_response(409, "", str(exc))


async def _request_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    if loc and loc[0] in ("body", "query", "path"):
        loc = loc[1:]
    reason = first.get("msg", "invalid request").removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        reason = "unknown field"
    return error_response(400, format_path(loc), reason)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, "", str(exc.detail))


def install(app: FastAPI) -> None:
    app.add_exception_handler(ConfigError, _config_error)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(HTTPException, _http_error)
