"""Who is calling: the principal an authenticated request acts as.

Operators hold tokens with a role. Workloads are known by a SPIFFE ID, either from a join
token (their first contact) or from the client certificate the CA issued them. Under
`--insecure-dev` a request without credentials is the anonymous admin.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from plait.security.spiffe import SpiffeId


class Role(enum.IntEnum):
    """Each role includes the ones below it."""

    VIEWER = 1  # read everything but tokens and the audit log
    EDITOR = 2  # + write resources and the registry
    ADMIN = 3  # + tokens, audit log, CA rotation

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}; expected viewer, editor or admin") from None

    def __str__(self) -> str:
        return self.name.lower()


class Kind(enum.Enum):
    OPERATOR = "operator"
    JOIN = "join"  # a workload presenting its join token
    WORKLOAD = "workload"  # a workload presenting its certificate
    ANONYMOUS = "anonymous"  # --insecure-dev only


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Kind
    actor: str  # token id, SPIFFE ID URI, or "anonymous": what the audit log names
    role: Role | None = None
    spiffe_id: SpiffeId | None = None
    services: tuple[str, ...] = ()  # what a workload may register

    @property
    def is_workload(self) -> bool:
        return self.kind in (Kind.JOIN, Kind.WORKLOAD)

    def has(self, role: Role) -> bool:
        return self.role is not None and self.role >= role


ANONYMOUS_ADMIN = Principal(Kind.ANONYMOUS, "anonymous", role=Role.ADMIN)
