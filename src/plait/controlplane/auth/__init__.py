"""Authentication, authorization and the audit log of the control plane's API.

`Security` holds the token store, the audit log and the CA; `AuthMiddleware` is the one
edge every request crosses; `policy` is the table of who may call what.
"""

from plait.controlplane.auth.audit import AuditedStore
from plait.controlplane.auth.guards import Forbidden, principal_of, registry_guard
from plait.controlplane.auth.middleware import AuthMiddleware
from plait.controlplane.auth.principal import Kind, Principal, Role
from plait.controlplane.auth.security import Security

__all__ = ["AuditedStore", "AuthMiddleware", "Forbidden", "Kind", "Principal", "Role",
           "Security", "principal_of", "registry_guard"]  # fmt: skip
