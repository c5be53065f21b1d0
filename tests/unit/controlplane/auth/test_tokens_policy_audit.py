"""Tokens (only hashes stored, lookups by id), the policy table, and audited store writes."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import yaml

from plait.core.errors import ConfigError
from plait.controlplane.auth import AuditedStore, Kind, Principal, Role
from plait.controlplane.auth import audit
from plait.controlplane.auth.db import open_db
from plait.controlplane.auth.policy import Need, need_of, refusal
from plait.controlplane.auth.tokens import TokenRejected, TokenStore
from plait.controlplane.store import SqliteStore
from plait.model import ResourceKey, parse_documents
from plait.security.spiffe import SpiffeId


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path):
    conn = open_db(tmp_path)
    yield conn
    conn.close()


def test_only_the_hash_of_a_token_is_stored(db):
    store = TokenStore(db)
    text, token = store.create_operator(Role.EDITOR, created_by="test")
    assert text.startswith(f"plt_{token.id}.")
    secret = text.split(".", 1)[1]
    dump = "\n".join(str(row) for row in db.execute("SELECT * FROM tokens"))
    assert secret not in dump and text not in dump
    assert hashlib.sha256(secret.encode()).hexdigest() in dump
    assert store.verify(text).role is Role.EDITOR
    assert "token" not in token.json(now=0) and secret not in str(token.json(now=0))


def test_bad_tokens_are_rejected_with_a_reason(db):
    clock = Clock()
    store = TokenStore(db, now=clock)
    text, token = store.create_join(namespace="shop", account="cart", created_by="t", ttl=60)
    assert store.verify(text).kind == "join"
    tid, secret = text.removeprefix("plt_").split(".")
    wrong = f"plt_{tid}.{'A' * len(secret)}"
    cases = [("Bearer", "malformed token"), (text + "x", "malformed token"),
             (wrong, "unknown token"), (f"plt_{'0' * 12}.{secret}", "unknown token")]
    for presented, reason in cases:
        with pytest.raises(TokenRejected, match=reason):
            store.verify(presented)
    clock.now += 61
    with pytest.raises(TokenRejected, match="expired") as err:
        store.verify(text)
    assert err.value.token_id == tid
    clock.now -= 61
    store.revoke(token.id)
    with pytest.raises(TokenRejected, match="revoked"):
        store.verify(text)
    assert store.list()[0].json(now=clock.now)["state"] == "revoked"


def test_join_tokens_check_their_identity(db):
    store = TokenStore(db)
    with pytest.raises(ConfigError) as err:
        store.create_join(namespace="Shop", account="cart", created_by="t")
    assert err.value.path == "namespace"
    with pytest.raises(ConfigError) as err:
        store.create_join(namespace="shop", account="cart", services=["ok", "Not OK"], created_by="t")
    assert err.value.path == "services[1]"
    _, token = store.create_join(namespace="shop", account="cart", services=["a", "b", "a"], created_by="t")
    assert token.services == ("a", "b") and token.expires_at is not None


VIEWER = Principal(Kind.OPERATOR, "v", role=Role.VIEWER)
EDITOR = Principal(Kind.OPERATOR, "e", role=Role.EDITOR)
ADMIN = Principal(Kind.OPERATOR, "a", role=Role.ADMIN)
WORKLOAD = Principal(Kind.WORKLOAD, "spiffe://x", spiffe_id=SpiffeId("cluster.local", "d", "w"),
                     services=("w",))


@pytest.mark.parametrize("method, path, allowed", [
    ("GET", "/healthz", {"nobody"}),
    ("GET", "/api/v1/resources/vs", {"viewer", "editor", "admin"}),
    ("GET", "/openapi.json", {"viewer", "editor", "admin"}),
    ("POST", "/api/v1/apply", {"editor", "admin"}),
    ("DELETE", "/api/v1/resources/vs/default/x", {"editor", "admin"}),
    ("POST", "/api/v1/resources/vs/default/x/rollback", {"editor", "admin"}),
    ("POST", "/api/v1/registry/instances", {"editor", "admin", "workload"}),
    ("PUT", "/api/v1/registry/leases/abc", {"editor", "admin", "workload"}),
    ("POST", "/api/v1/ca/certificates", {"workload"}),
    ("GET", "/api/v1/ca/bundle", {"viewer", "editor", "admin", "workload"}),
    ("POST", "/api/v1/ca/rotate", {"admin"}),
    ("GET", "/api/v1/tokens", {"admin"}),
    ("DELETE", "/api/v1/tokens/abc", {"admin"}),
    ("GET", "/api/v1/audit", {"admin"}),
    ("POST", "/api/v1/something-new", {"admin"}),
])
def test_the_policy_table(method, path, allowed):
    need = need_of(method, path)
    if allowed == {"nobody"}:
        assert need is Need.PUBLIC
        return
    who = {"viewer": VIEWER, "editor": EDITOR, "admin": ADMIN, "workload": WORKLOAD}
    assert {name for name, p in who.items() if refusal(p, need) is None} == allowed


def test_audited_writes_note_diffs_of_the_yaml(tmp_path):
    store = SqliteStore.open(tmp_path)
    audited = AuditedStore(store)
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{timeout: %s, route: [{destination: {host: reviews}}]}]
"""

    async def scenario():
        ctx = audit.AuditContext(EDITOR)
        token = audit.current.set(ctx)
        try:
            await audited.put_many(parse_documents(vs % "1s"))
            await audited.put_many(parse_documents(vs % "1s"))  # unchanged: nothing noted
            await audited.put_many(parse_documents(vs % "2s"))
            await audited.delete(ResourceKey("VirtualService", "default", "reviews"))
        finally:
            audit.current.reset(token)
        return ctx.changes

    try:
        changes = asyncio.run(scenario())
    finally:
        store.close()
    assert [c.resource for c in changes] == ["VirtualService default/reviews"] * 3
    created, updated, deleted = (c.diff for c in changes)
    assert created.startswith("--- /dev/null\n+++ VirtualService/default/reviews@v1\n")
    assert "+    timeout: 1s" in created
    assert updated.startswith("--- VirtualService/default/reviews@v1\n+++ VirtualService/default/reviews@v2\n")
    assert updated.endswith("-    timeout: 1s\n+    timeout: 2s\n")
    assert "@v2\n+++ VirtualService/default/reviews@v3" in deleted and "\n+" not in deleted.split("@@", 1)[1]
    yaml.safe_load("".join(l[1:] for l in created.splitlines(keepends=True)[3:]))  # the body is YAML
