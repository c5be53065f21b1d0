"""From YAML or dicts to validated resources, or a `ConfigError` naming the field.

The only entry points: `parse_resource(doc)` and `parse_documents(yaml_text)`. Whatever
the input, they return resources or raise `ConfigError` (a fuzz test holds them to it).
Pydantic's error locations are tuples; they are rewritten into Istio-style paths such as
`spec.http[0].route[1].weight`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError

from plait.core.errors import ConfigError
from plait.model import checks, governance_checks
from plait.model.authorization_policy import check_authorization_policy
from plait.model.peer_authentication import check_peer_authentication
from plait.model.resource import KINDS, Resource

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Friendlier words for pydantic's most common complaints.
_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
}


class DocumentError(ConfigError):
    """A `ConfigError` in one document of a multi-document input.

    `document` is the 1-based position of the offending document in the input.
    """

    def __init__(self, path: str, reason: str, *, document: int) -> None:
        super().__init__(path, reason)
        self.document = document


def format_path(loc: tuple[Any, ...]) -> str:
    """('spec', 'http', 0, 'route', 1, 'weight') → 'spec.http[0].route[1].weight'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += "(key)"
        elif _IDENT.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{str(part)!r}]"
    return out


def _from_validation_error(err: ValidationError) -> ConfigError:
    errors = err.errors(include_url=False, include_input=False)
    first = errors[0]
    reason = _MESSAGES.get(first["type"]) or first["msg"].removeprefix("Value error, ")
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ConfigError(format_path(tuple(first["loc"])), reason)


def parse_resource(doc: Any) -> Resource:
    """Validate one Istio-shaped document (a dict, as from YAML or JSON).

    Returns a `VirtualService`, `DestinationRule` or `ServiceEntry`; raises `ConfigError`
    with the field path and the reason for anything else.
    """
    if not isinstance(doc, dict):
        raise ConfigError("", f"a resource must be a mapping, not {type(doc).__name__}")
    kind = doc.get("kind")
    if kind is None:
        raise ConfigError("kind", "required field is missing")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError("kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    try:
        resource = KINDS[kind].model_validate(doc)
    except ValidationError as err:
        raise _from_validation_error(err) from None
    except RecursionError:
        raise ConfigError("", "document is nested too deeply") from None
    _CHECKS[kind](resource)
    return resource


_CHECKS = {
    "VirtualService": checks.check_virtual_service,
    "DestinationRule": checks.check_destination_rule,
    "ServiceEntry": checks.check_service_entry,
    "PeerAuthentication": check_peer_authentication,
    "AuthorizationPolicy": check_authorization_policy,
    **governance_checks.CHECKS,
}


def load_yaml_documents(text: str) -> list[Any]:
    """Parse multi-document YAML safely; empty documents are dropped.

    Raises `ConfigError` with the line and column of a syntax error.
    """
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"invalid YAML: {err.problem or err.context}{where}") from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as err:
        raise ConfigError("", f"invalid YAML: {err}") from None


def parse_documents(yaml_text: str) -> list[Resource]:
    """Validate every document of a multi-document YAML text, all before returning.

    Raises `DocumentError` (a `ConfigError`) for the first bad document, so callers can
    apply all or nothing.
    """
    docs = load_yaml_documents(yaml_text)
    resources = []
    for i, doc in enumerate(docs, start=1):
        try:
            resources.append(parse_resource(doc))
        except ConfigError as err:
            raise DocumentError(err.path, err.reason, document=i) from None
    return resources
