"""xDS v3 type URLs and the conversions between documents and protobuf messages.

Parse errors from protobuf's JSON parser are turned into `ConfigError` with a field path,
so a bad bootstrap or resource says where it is wrong rather than dumping a traceback.

Protobuf's own error text cannot be trusted for the path: depending on the error it
names the field with or without list indices, and sometimes skips message fields. So on
a ParseError the document is walked beside the message descriptor, and protobuf itself
is asked at each level which key it refuses: each key is parsed alone into a fresh
message of that level's type, the first refused key is followed down (a list to its
first refused element, a map to its first refused entry, an `Any` into the type its
`@type` names), and the walk stops at the deepest field protobuf still refuses. The
reason is protobuf's, for that field alone. Only errors pay for the walk; a refused
document costs at most one parse per level and key on the way down.
"""

from __future__ import annotations

import re

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
# Imported so that their type URLs resolve inside `typed_config` (the descriptor pool).
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)

from plait.core.errors import ConfigError

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")

MESSAGE_TYPES: dict[str, type[Message]] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
}

_PREFIX = re.compile(r"^(?:Failed to parse \w+ field: )+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse(document: dict, message: Message, *, root: str = "") -> Message:
    """Fill `message` from a JSON-shaped dict. Raises ConfigError(path, reason), the path
    from `root` to the first field protobuf refuses (e.g. `clusters[0].connect_timeout`)."""
    try:
        _parse_dict(document, message)
    except json_format.ParseError:
        path, reason = _locate(document, message.DESCRIPTOR, root)
        raise ConfigError(path, reason) from None
    return message


def _parse_dict(document, message: Message) -> None:
    """`json_format.ParseDict`, whose few other failures on malformed input (an `Any`
    whose `@type` is not a string fails with AttributeError) become its ParseError."""
    try:
        json_format.ParseDict(document, message)
    except (AttributeError, TypeError, ValueError) as exc:
        raise json_format.ParseError(f"not valid ({exc})") from exc


def _refusal(descriptor: Descriptor, document) -> str | None:
    """Why protobuf refuses `document` as a `descriptor` message (its text without the
    path it adds), or None if it accepts it."""
    try:
        _parse_dict(document, message_factory.GetMessageClass(descriptor)())
    except json_format.ParseError as exc:
        text = _PREFIX.sub("", str(exc).split("\n", 1)[0])
        text = re.sub(rf'\s+at "?{re.escape(descriptor.name)}(?=[.\["\s]|$).*$', "", text)
        return text.rstrip(". ") or "not valid"
    return None


def _locate(document, descriptor: Descriptor, path: str) -> tuple[str, str]:
    """The path and reason of the first field of `document` (refused by protobuf as a
    `descriptor` message) that protobuf refuses on its own."""
    if isinstance(document, dict):
        fields = {}
        for field in descriptor.fields:
            fields[field.name] = fields[field.json_name] = field
        for key, value in document.items():
            reason = _refusal(descriptor, {key: value})
            if reason is None:
                continue
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                return _child(path, key), f"unknown field {key!r}"
            return _locate_field(descriptor, field, key, value, _child(path, key), reason)
    # Every key is accepted alone: they clash (two members of one oneof, a field given
    # under both its names), or the document is not a mapping at all.
    return path, _refusal(descriptor, document) or "not valid"


def _locate_field(container: Descriptor, field: FieldDescriptor, key: str, value,
                  path: str, reason: str) -> tuple[str, str]:
    """Follow a refused field down to its first refused element or entry."""
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        if isinstance(value, dict):
            value_field = entry.fields_by_name["value"]
            for map_key, item in value.items():
                why = _refusal(container, {key: {map_key: item}})
                if why is not None:
                    return _locate_value(value_field, item, f"{path}[{map_key!r}]", why)
        return path, reason
    if field.is_repeated:
        if isinstance(value, list):
            for index, item in enumerate(value):
                why = _refusal(container, {key: [item]})
                if why is not None:
                    return _locate_value(field, item, f"{path}[{index}]", why)
        return path, reason
    return _locate_value(field, value, path, reason)


def _locate_value(field: FieldDescriptor, value, path: str, reason: str) -> tuple[str, str]:
    """One refused value of `field`: a scalar, or a message to walk into."""
    descriptor = field.message_type
    if descriptor is None:
        return path, reason
    if descriptor.full_name == "google.protobuf.Any" and isinstance(value, dict):
        if "@type" in value and not isinstance(value["@type"], str):
            return (_child(path, "@type"),
                    f"expected a type URL string, got {_json_kind(value['@type'])}")
        descriptor = _any_type(value)
        value = {k: v for k, v in value.items() if k != "@type"}
    # Other well-known types have a JSON form of their own (a Duration is "1.5s"): the
    # refused field is the whole value.
    if descriptor is None or _own_json(descriptor):
        return path, reason
    if not isinstance(value, dict):
        # Protobuf would read a string here as a mapping of its letters (no field "w").
        return path, f"expected a mapping ({descriptor.name}), got {_json_kind(value)}"
    return _locate(value, descriptor, path)


def _own_json(descriptor: Descriptor) -> bool:
    return (descriptor.full_name.startswith("google.protobuf.")
            and descriptor.full_name not in ("google.protobuf.Any", "google.protobuf.Empty"))


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else type(value).__name__


def _any_type(document: dict) -> Descriptor | None:
    """The message type an `Any` document's `@type` names, if this process knows it."""
    type_url = document.get("@type")
    if not isinstance(type_url, str):
        return None
    try:
        return descriptor_pool.Default().FindMessageTypeByName(type_url.rsplit("/", 1)[-1])
    except KeyError:
        return None


def _child(path: str, key) -> str:
    if isinstance(key, str) and _IDENT.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def duration(d) -> float:
    """A google.protobuf.Duration as float seconds."""
    return d.seconds + d.nanos / 1e9
