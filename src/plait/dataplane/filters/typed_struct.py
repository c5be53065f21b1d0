"""Plait's own filter configs, carried as `xds.type.v3.TypedStruct` (a type URL and a Struct).

Envoy has no protobuf for Plait's governance filters, so their config travels the way
Envoy carries extension configs it has no compiled type for: a TypedStruct whose
`type_url` names the config type and whose `value` is a JSON-shaped Struct. `Fields`
reads such a Struct strictly: unknown fields, wrong types and out-of-range numbers are a
ConfigError naming the field path, as for every other config the sidecar compiles.
Shared here too: the request match the governance kinds use (`match: {method, path:
{exact|prefix}, headers: [{name, value}], caller}`) and a degrade fallback answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from google.protobuf import duration_pb2, json_format
from xds.type.v3.typed_struct_pb2 import TypedStruct

from plait.core.errors import ConfigError
from plait.dataplane.config import HeaderMatch
from plait.dataplane.http.caller import CALLER_APP
from plait.dataplane.http.local_reply import ERROR_HEADER

__all__ = ["TypedStruct", "Fields", "unpack", "RequestMatch", "MATCH_ALL", "request_match",
           "Fallback", "fallback"]


def unpack(msg: TypedStruct, type_url: str, path: str) -> dict:
    """The Struct of a TypedStruct as a dict, after checking its type URL."""
    if msg.type_url != type_url:
        raise ConfigError(f"{path}.type_url", f"expected {type_url!r}, got {msg.type_url!r}")
    return json_format.MessageToDict(msg.value)


class Fields:
    """Typed, path-aware reads of one JSON object; `done()` rejects fields never read."""

    def __init__(self, data, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, "must be a mapping")
        self.data = data
        self.path = path
        self.seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str):
        self.seen.add(key)
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str, default: str | None = None) -> str:
        value = self._get(key)
        if value is None:
            if default is None:
                raise ConfigError(self.at(key), "required")
            return default
        if not isinstance(value, str):
            raise ConfigError(self.at(key), "must be a string")
        return value

    def number(self, key: str, default: float | None = None, *, lo: float = 0.0,
               hi: float = 1e12, whole: bool = False) -> float:
        value = self._get(key)
        if value is None:
            if default is None:
                raise ConfigError(self.at(key), "required")
            return default
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise ConfigError(self.at(key), "must be a number")
        if whole and value != int(value):
            raise ConfigError(self.at(key), "must be a whole number")
        if not lo <= value <= hi:
            raise ConfigError(self.at(key), f"must be in {lo:g}..{hi:g}")
        return int(value) if whole else float(value)

    def integer(self, key: str, default: int | None = None, *, lo: int = 0,
                hi: int = 10**9) -> int:
        return int(self.number(key, default, lo=lo, hi=hi, whole=True))

    def seconds(self, key: str, default: float, *, lo: float = 0.0,
                hi: float = 86400.0) -> float:
        """A duration: a number of seconds, or protobuf's JSON form of one ("1.5s")."""
        if not isinstance(self.data.get(key), str):
            value = self.number(key, default, lo=-math.inf, hi=math.inf)
        else:
            self.seen.add(key)
            d = duration_pb2.Duration()
            try:
                d.FromJsonString(self.data[key])
            except ValueError:
                raise ConfigError(self.at(key), "must be a duration such as \"30s\" or a "
                                  "number of seconds") from None
            value = d.seconds + d.nanos / 1e9
        if not lo <= value <= hi:
            raise ConfigError(self.at(key), f"must be in {lo:g}s..{hi:g}s")
        return value

    def obj(self, key: str) -> "Fields | None":
        value = self._get(key)
        return None if value is None else Fields(value, self.at(key))

    def objects(self, key: str, *, max_items: int = 64) -> list["Fields"]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(self.at(key), "must be a list")
        if len(value) > max_items:
            raise ConfigError(self.at(key), f"at most {max_items} items")
        return [Fields(v, f"{self.at(key)}[{i}]") for i, v in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(self.at(unknown[0]), "unknown field")


@dataclass(frozen=True, slots=True)
class RequestMatch:
    """Which requests a rule covers; empty fields match everything."""

    method: bytes | None = None
    exact: bytes | None = None  # the path without its query
    prefix: bytes | None = None  # of the request target
    headers: tuple[HeaderMatch, ...] = ()

    def matches(self, ex) -> bool:
        req = ex.request
        if self.method is not None and req.method != self.method:
            return False
        if self.exact is not None and req.target.partition(b"?")[0] != self.exact:
            return False
        if self.prefix is not None and not req.target.startswith(self.prefix):
            return False
        return not self.headers or ex.headers_match(self.headers)


MATCH_ALL = RequestMatch()  # every request; filters skip matching for it (`is MATCH_ALL`)


def _token(text: str, path: str) -> bytes:
    if not text or any(c in text for c in " \t\r\n\0:"):
        raise ConfigError(path, "must be a header name (a token)")
    return text.lower().encode()


def _value(text: str, path: str) -> bytes:
    if any(c in text for c in "\r\n\0"):
        raise ConfigError(path, "must not contain CR, LF or NUL")
    return text.encode()


def request_match(f: "Fields | None") -> RequestMatch:
    if f is None:
        return MATCH_ALL
    method = f.string("method", "")
    out: dict = {"method": method.encode() if method else None}
    p = f.obj("path")
    if p is not None:
        exact, prefix = p.string("exact", ""), p.string("prefix", "")
        if bool(exact) == bool(prefix) or not (exact or prefix).startswith("/"):
            raise ConfigError(p.path, "set exactly one of exact, prefix (starting with /)")
        p.done()
        out["exact" if exact else "prefix"] = (exact or prefix).encode()
    headers = []
    for h in f.objects("headers"):
        name = _token(h.string("name"), h.at("name"))
        value = h.string("value", "")
        headers.append(HeaderMatch(name=name, exact=_value(value, h.at("value")))
                       if h.has("value") else HeaderMatch(name=name, present=True))
        h.done()
    caller = f.string("caller", "")
    if caller:
        headers.append(HeaderMatch(name=CALLER_APP, exact=_value(caller, f.at("caller"))))
    out["headers"] = tuple(headers)
    f.done()
    match = RequestMatch(**out)
    return MATCH_ALL if match == MATCH_ALL else match


@dataclass(frozen=True, slots=True)
class Fallback:
    """A degrade answer: status, body, and headers (x-plait-error included)."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]


def fallback(f: "Fields | None", reason) -> Fallback | None:
    if f is None:
        return None
    status = f.integer("status", lo=200, hi=599)
    body = f.string("body", "").encode()
    if len(body) > 64 * 1024:
        raise ConfigError(f.at("body"), "at most 64 KiB")
    headers = []
    h = f.obj("headers")
    if h is not None:
        for name in sorted(h.data):
            key = _token(name, h.at(name))
            if key in (b"content-length", b"transfer-encoding", b"connection", ERROR_HEADER):
                raise ConfigError(h.at(name), "cannot be set by a fallback")
            headers.append((key, _value(h.string(name), h.at(name))))
        h.done()
    headers.append((ERROR_HEADER, reason.value.encode()))
    f.done()
    return Fallback(status=status, body=body, headers=tuple(headers))
