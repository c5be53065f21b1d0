"""Who may call what: one table from (method, path) to what the caller needs.

Read top to bottom; the first matching rule decides. Anything not named is a read for
viewers (GET) or a write for admins (every other method): a new endpoint is never open
by accident. Workload credentials (join tokens, workload certificates) reach only the
rules that name them; whether a workload may touch a given registry entry is decided
next to the registry routes (`guards.py`), where the request body is known.
"""

from __future__ import annotations

import enum
import re

from plait.controlplane.auth.principal import Kind, Principal, Role


class Need(enum.Enum):
    PUBLIC = "public"  # no credentials at all
    ANY = "any"  # any authenticated caller
    WORKLOAD = "workload"  # a workload (join token or certificate)
    REGISTRY = "registry"  # an editor, or a workload for its own services
    REPORT = "report"  # an editor, or any workload (events and telemetry from sidecars)
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"


_RULES: list[tuple[str, str, Need]] = [
    ("GET|HEAD", r"/healthz", Need.PUBLIC),
    ("GET|HEAD", r"/api/v1/ca/bundle", Need.ANY),
    ("POST", r"/api/v1/ca/certificates", Need.WORKLOAD),
    ("POST", r"/api/v1/registry/instances", Need.REGISTRY),
    ("PUT|DELETE", r"/api/v1/registry/leases/[^/]+", Need.REGISTRY),
    ("POST", r"/api/v1/(events|telemetry)", Need.REPORT),
    ("POST", r"/api/v1/apply", Need.EDITOR),
    ("DELETE", r"/api/v1/resources/[^/]+/[^/]+/[^/]+", Need.EDITOR),
    ("POST", r"/api/v1/resources/[^/]+/[^/]+/[^/]+/rollback", Need.EDITOR),
    (".*", r"/api/v1/tokens(/.*)?", Need.ADMIN),
    (".*", r"/api/v1/audit", Need.ADMIN),
    (".*", r"/api/v1/ca/rotate", Need.ADMIN),
    ("GET|HEAD", r".*", Need.VIEWER),
    (".*", r".*", Need.ADMIN),
]
RULES = [(re.compile(m), re.compile(p), need) for m, p, need in _RULES]
_ROLE = {Need.VIEWER: Role.VIEWER, Need.EDITOR: Role.EDITOR, Need.ADMIN: Role.ADMIN,
         Need.REGISTRY: Role.EDITOR, Need.REPORT: Role.EDITOR}  # fmt: skip


def need_of(method: str, path: str) -> Need:
    for m, p, need in RULES:
        if m.fullmatch(method) and p.fullmatch(path):
            return need
    raise AssertionError("the last rule matches everything")


def refusal(principal: Principal, need: Need) -> str | None:
    """Why `principal` may not make a request needing `need` (a 403), or None if it may."""
    if need in (Need.PUBLIC, Need.ANY):
        return None
    if need is Need.WORKLOAD:
        if principal.is_workload:
            return None
        return ("certificates are issued to workloads: present a join token or a workload "
                "certificate")
    if principal.is_workload:
        if need in (Need.REGISTRY, Need.REPORT):
            return None
        return "workload credentials reach only the CA and the registry"
    assert principal.kind in (Kind.OPERATOR, Kind.ANONYMOUS)
    role = _ROLE[need]
    if principal.has(role):
        return None
    return f"needs the {role} role; this token has {principal.role}"
