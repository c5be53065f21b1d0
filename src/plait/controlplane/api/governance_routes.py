"""Governance routes: sidecars post events and telemetry; operators read events and alarms.

`POST /api/v1/events` takes a JSON list of events, `POST /api/v1/telemetry` one report.
Both bodies are read only up to a size limit and validated completely before anything
is kept; an error names the field (`[2].type`, `upstreams.pricing.errors`) like every
other API error. What is kept is bounded: events in a ring, telemetry in per-second
buckets, alarms in their own SQLite log (see `plait.controlplane.alarms`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from plait.core.errors import ConfigError
from plait.controlplane.alarms import AlarmHub, GovernanceEvent, TelemetryReport, UpstreamStats
from plait.model.alarm_rule import EVENT_TYPES, MAX_WINDOW_SECONDS
from plait.model.parse import format_path

MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = 1000  # per request
MAX_UPSTREAMS = 1000  # per report
MAX_DETAIL_BYTES = 4096  # per event, as JSON

Name = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^\S+$")]
Text = Annotated[str, Field(max_length=512)]
Count = Annotated[int, Field(ge=0, le=10**12)]
Limit = Annotated[int, Query(ge=1, le=1000)]  # how many of the newest to return
Millis = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class EventIn(_Body):
    type: str
    service: Name
    cluster: Text | None = None
    host: Text | None = None
    node_id: Name
    time: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    detail: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, text: str) -> str:
        if text not in EVENT_TYPES:
            raise ValueError(f"unknown event type {text!r}; expected one of "
                             f"{', '.join(EVENT_TYPES)}")  # fmt: skip
        return text

    @field_validator("detail")
    @classmethod
    def _small(cls, detail: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(detail)) > MAX_DETAIL_BYTES:
            raise ValueError(f"larger than {MAX_DETAIL_BYTES} bytes as JSON")
        return detail


class UpstreamIn(_Body):
    requests: Count
    errors: Count
    p50_ms: Millis | None = None
    p99_ms: Millis | None = None

    @field_validator("errors")
    @classmethod
    def _not_above_requests(cls, errors: int, info: Any) -> int:
        requests = info.data.get("requests")
        if requests is not None and errors > requests:
            raise ValueError(f"{errors} errors out of {requests} requests")
        return errors


class TelemetryIn(_Body):
    node_id: Name
    app: Name
    window: Annotated[float, Field(gt=0, le=MAX_WINDOW_SECONDS, allow_inf_nan=False)]
    upstreams: Annotated[dict[Name, UpstreamIn], Field(max_length=MAX_UPSTREAMS)]


_EVENTS = TypeAdapter(Annotated[list[EventIn], Field(max_length=MAX_EVENTS)])
_TELEMETRY = TypeAdapter(TelemetryIn)
_MESSAGES = {"extra_forbidden": "unknown field", "missing": "required field is missing",
             "model_type": "must be a mapping", "model_attributes_type": "must be a mapping",
             "dict_type": "must be a mapping", "list_type": "must be a list"}  # fmt: skip


def _no_constants(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON and could not be served back.
    raise ValueError(f"{name} is not a JSON value")


async def _read_json(request: Request) -> Any:
    body = bytearray()
    async for chunk in request.stream():  # read no further than the limit
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ConfigError("", f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise ConfigError("", f"body is not JSON: {exc}") from None


def _validate(adapter: TypeAdapter, data: Any) -> Any:
    try:
        return adapter.validate_python(data)
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        reason = _MESSAGES.get(first["type"]) or first["msg"].removeprefix("Value error, ")
        raise ConfigError(format_path(tuple(first["loc"])), reason) from None
    except RecursionError:
        raise ConfigError("", "body is nested too deeply") from None


def _schema(adapter: TypeAdapter) -> dict[str, Any]:
    schema = adapter.json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # the $refs are left unresolved; the shape stays readable
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}  # fmt: skip


def router(hub: AlarmHub) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["governance"])

    @api.post("/events", openapi_extra=_schema(_EVENTS))
    async def post_events(request: Request) -> dict[str, Any]:
        """Governance events from a sidecar: a JSON list, all valid or none kept."""
        events = [GovernanceEvent(type=e.type, service=e.service, node_id=e.node_id, time=e.time,
                                  cluster=e.cluster, host=e.host, detail=e.detail)
                  for e in _validate(_EVENTS, await _read_json(request))]  # fmt: skip
        alarms = hub.ingest_events(events)
        return {"accepted": len(events), "alarms": [a.id for a in alarms]}

    @api.post("/telemetry", openapi_extra=_schema(_TELEMETRY))
    async def post_telemetry(request: Request) -> dict[str, Any]:
        """A sidecar's periodic report of its app's calls, per upstream service."""
        body: TelemetryIn = _validate(_TELEMETRY, await _read_json(request))
        upstreams = {name: UpstreamStats(u.requests, u.errors, u.p50_ms, u.p99_ms)
                     for name, u in body.upstreams.items()}  # fmt: skip
        alarms = hub.ingest_telemetry(TelemetryReport(body.node_id, body.app, body.window,
                                                      upstreams))  # fmt: skip
        return {"accepted": len(upstreams), "alarms": [a.id for a in alarms]}

    @api.get("/events")
    async def get_events(service: str | None = None, type: str | None = None,
                         limit: Limit = 100) -> dict[str, Any]:  # fmt: skip
        """The newest events (filtered by service and type), oldest first."""
        if type is not None and type not in EVENT_TYPES:
            raise ConfigError("type", f"unknown event type {type!r}; expected one of "
                                      f"{', '.join(EVENT_TYPES)}")  # fmt: skip
        found = hub.events.recent(service=service, type=type, limit=limit)
        return {"events": [e.to_json() for e in found]}

    @api.get("/alarms")
    async def get_alarms(service: str | None = None, rule: str | None = None,
                         limit: Limit = 100) -> dict[str, Any]:  # fmt: skip
        """The newest fired alarms with their delivery, oldest first."""
        return {"alarms": [a.to_json() for a in hub.log.recent(service=service, rule=rule,
                                                               limit=limit)]}  # fmt: skip

    @api.get("/telemetry")
    async def get_telemetry(
        window: Annotated[float, Query(gt=0, le=MAX_WINDOW_SECONDS)] = 60.0,
    ) -> dict[str, Any]:
        """Per service, what the sidecars reported calling it in the last `window` seconds."""
        out = []
        for name in hub.telemetry.services():
            t = hub.telemetry.totals(name, window)
            if t.requests or t.reporters:
                out.append({"service": name, "requests": t.requests, "errors": t.errors,
                            "errorRate": round(t.error_rate, 6), "p99MsMax": t.p99_ms_max,
                            "reporters": t.reporters})  # fmt: skip
        return {"window": window, "services": out}

    return api


