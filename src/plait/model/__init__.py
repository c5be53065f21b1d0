"""Northbound resources: Istio-shaped, validated on the way in, shared by API, CLI and push.

Import from here: `parse_resource`, `parse_documents`, the kinds, `Resource`, `key_of`,
`to_dict`, `resolve_kind`, and `parse_duration` for turning duration strings into seconds.
"""

from plait.model.destination_rule import DestinationRule
from plait.model.duration import parse_duration
from plait.model.parse import DocumentError, parse_documents, parse_resource
from plait.model.resource import KINDS, Resource, ResourceKey, key_of, resolve_kind, to_dict
from plait.model.service_entry import ServiceEntry
from plait.model.virtual_service import VirtualService

__all__ = [
    "KINDS",
    "DestinationRule",
    "DocumentError",
    "Resource",
    "ResourceKey",
    "ServiceEntry",
    "VirtualService",
    "key_of",
    "parse_documents",
    "parse_duration",
    "parse_resource",
    "resolve_kind",
    "to_dict",
]
