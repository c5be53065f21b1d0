"""Operator and join tokens: made once, stored only as a hash, found by id in O(1).

A token reads `plt_<id>.<secret>`: `id` is 12 hex digits, public, the row's primary key
and what logs and the audit log name; `secret` is 32 random bytes (base64url) of which
only the SHA-256 is kept. Checking a token is one primary-key lookup and a constant-time
compare. A stolen database therefore yields no usable token, and 256 bits of secret make
a fast unsalted hash sufficient (there is nothing to guess, unlike a password).

Operator tokens carry a role and never expire unless given a TTL. Join tokens carry the
workload identity they grant (namespace, service account, and optionally the services
it may register) and expire (default one hour); both can be revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Callable

from plait.core.errors import ConfigError
from plait.controlplane.auth.principal import Role
from plait.controlplane.store.base import NotFoundError
from plait.security.spiffe import check_account, check_namespace

PREFIX = "plt_"
_FORMAT = re.compile(r"plt_([0-9a-f]{12})\.([A-Za-z0-9_-]{43})")
JOIN_DEFAULT_TTL = 3600.0
MAX_TTL = 366 * 86400.0
_SERVICE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


class TokenRejected(Exception):
    """A presented token is malformed, unknown, expired or revoked. `token_id` is the id
    part when the token had a readable one (never the secret)."""

    def __init__(self, reason: str, token_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.token_id = token_id


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    kind: str  # operator | join
    role: Role | None
    namespace: str | None
    account: str | None
    services: tuple[str, ...]
    description: str
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None

    def json(self, *, now: float) -> dict:
        """The token's public description: everything but the secret (never stored)."""
        state = "revoked" if self.revoked_at else (
            "expired" if self.expires_at is not None and self.expires_at <= now else "active")
        out = {"id": self.id, "kind": self.kind, "state": state, "description": self.description,
               "createdAt": self.created_at, "createdBy": self.created_by,
               "expiresAt": self.expires_at, "revokedAt": self.revoked_at}  # fmt: skip
        if self.kind == "operator":
            out["role"] = str(self.role)
        else:
            out.update(namespace=self.namespace, serviceAccount=self.account,
                       services=list(self.services))  # fmt: skip
        return out


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_services(names: list[str]) -> tuple[str, ...]:
    for i, name in enumerate(names):
        if len(name) > 253 or not _SERVICE.fullmatch(name):
            raise ConfigError(f"services[{i}]", f"{name!r} is not a lower-case service name")
    return tuple(dict.fromkeys(names))


class TokenStore:
    def __init__(self, db: sqlite3.Connection, *, now: Callable[[], float] = time.time) -> None:
        self._db = db
        self._now = now

    def _row(self, row: tuple) -> Token:
        (tid, _hash_, kind, role, namespace, account, services, description, created_at,
         created_by, expires_at, revoked_at) = row  # fmt: skip
        return Token(tid, kind, Role.parse(role) if role else None, namespace, account,
                     tuple(json.loads(services or "[]")), description, created_at, created_by,
                     expires_at, revoked_at)  # fmt: skip

    def _insert(self, *, kind: str, created_by: str, ttl: float | None, description: str,
                role: Role | None = None, namespace: str | None = None,
                account: str | None = None, services: tuple[str, ...] = ()) -> tuple[str, Token]:  # fmt: skip
        if ttl is not None and not 0 < ttl <= MAX_TTL:
            raise ConfigError("ttl", f"must be more than 0 and at most {MAX_TTL:.0f} seconds")
        if len(description) > 200:
            raise ConfigError("description", "at most 200 characters")
        tid, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = self._now()
        expires = None if ttl is None else now + ttl
        self._db.execute(
            "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (tid, _hash(secret), kind, str(role) if role else None, namespace, account,
             json.dumps(list(services)), description, now, created_by, expires))  # fmt: skip
        return f"{PREFIX}{tid}.{secret}", self.get(tid)

    def create_operator(self, role: Role, *, created_by: str, ttl: float | None = None,
                        description: str = "") -> tuple[str, Token]:  # fmt: skip
        """A new operator token: (the token text, shown once; its record)."""
        return self._insert(kind="operator", role=role, created_by=created_by, ttl=ttl,
                            description=description)  # fmt: skip

    def create_join(self, *, namespace: str, account: str, services: list[str] = (),
                    created_by: str, ttl: float | None = JOIN_DEFAULT_TTL,
                    description: str = "") -> tuple[str, Token]:  # fmt: skip
        """A new join token for the workload identity ns/sa (ConfigError for bad names)."""
        for path, check, value in (("namespace", check_namespace, namespace),
                                   ("serviceAccount", check_account, account)):  # fmt: skip
            try:
                check(value)
            except ValueError as exc:
                raise ConfigError(path, str(exc)) from None
        return self._insert(kind="join", namespace=namespace, account=account,
                            services=check_services(list(services)), created_by=created_by,
                            ttl=JOIN_DEFAULT_TTL if ttl is None else ttl,
                            description=description)  # fmt: skip

    def get(self, token_id: str) -> Token:
        row = self._db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"token {token_id}")
        return self._row(row)

    def list(self) -> list[Token]:
        rows = self._db.execute("SELECT * FROM tokens ORDER BY created_at, id").fetchall()
        return [self._row(r) for r in rows]

    def revoke(self, token_id: str) -> Token:
        """Revoke now (idempotent). NotFoundError for an unknown id."""
        self.get(token_id)
        self._db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                         (self._now(), token_id))  # fmt: skip
        return self.get(token_id)

    def has_admin(self) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM tokens WHERE kind = 'operator' AND role = 'admin' AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > ?) LIMIT 1", (self._now(),)).fetchone()
        return row is not None

    def verify(self, text: str) -> Token:
        """The live token `text` stands for; TokenRejected otherwise."""
        match = _FORMAT.fullmatch(text)
        if match is None:
            raise TokenRejected("malformed token")
        tid, secret = match.groups()
        row = self._db.execute("SELECT hash FROM tokens WHERE id = ?", (tid,)).fetchone()
        # Compare even for an unknown id, so timing does not tell which ids exist.
        stored = row[0] if row else "0" * 64
        if not hmac.compare_digest(stored, _hash(secret)) or row is None:
            raise TokenRejected("unknown token", tid)
        token = self.get(tid)
        if token.revoked_at is not None:
            raise TokenRejected("token revoked", tid)
        if token.expires_at is not None and token.expires_at <= self._now():
            raise TokenRejected("token expired", tid)
        return token
