"""xDS v3 type URLs and the conversions between documents and protobuf messages.

Parse errors from protobuf's JSON parser are turned into `ConfigError` with a field path,
so a bad bootstrap or resource says where it is wrong rather than dumping a traceback.
"""

from __future__ import annotations

import re

from google.protobuf import json_format
from google.protobuf.message import Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
# Imported so that their type URLs resolve inside `typed_config` (the descriptor pool).
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2  # noqa: F401
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

_AT = re.compile(r'at "?[A-Za-z0-9_]+\.([^"\s]+?)"?\.?(?:\s|$)')
_NO_FIELD = re.compile(r'has no field named "([^"]+)"')
_STEP = re.compile(r"Failed to parse (\w+) field: ")


def parse(document: dict, message: Message, *, root: str = "") -> Message:
    """Fill `message` from a JSON-shaped dict. Raises ConfigError(path, reason)."""
    try:
        json_format.ParseDict(document, message)
    except json_format.ParseError as exc:
        raise _config_error(str(exc), root) from None
    return message


def _config_error(text: str, root: str) -> ConfigError:
    first = text.split("\n", 1)[0]
    steps = _STEP.findall(first)
    reason = _STEP.sub("", first).rstrip(".")
    at = _AT.search(first)
    missing = _NO_FIELD.search(first)
    if at and missing:
        path = f"{at.group(1)}.{missing.group(1)}"
        reason = f"unknown field {missing.group(1)!r}"
    elif at:
        path = at.group(1).rstrip(".")
        reason = _AT.sub("", reason).strip()
    else:
        path = ".".join(steps)
        reason = _AT.sub("", reason).strip()
    if root:
        path = f"{root}.{path}" if path else root
    return ConfigError(path, reason)


def duration(d) -> float:
    """A google.protobuf.Duration as float seconds."""
    return d.seconds + d.nanos / 1e9
