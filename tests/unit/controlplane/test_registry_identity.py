"""Secure naming in the registry: an instance carries the SPIFFE ID of the workload that
registered it, taken from its credentials, never from the body; labels that claim mTLS
are dropped from authenticated callers; the identity survives health changes and a
restart, and rows from before it was recorded do not keep their unchecked mTLS."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import httpx
import pytest

from plait.controlplane.api import create_app
from plait.controlplane.api.registry_routes import registrant
from plait.controlplane.auth import Kind, Principal, Role, Security
from plait.controlplane.auth.db import open_db
from plait.controlplane.ca import Authority
from plait.controlplane.lease_table import LeaseTable
from plait.controlplane.mesh import Instance
from plait.controlplane.registry import Registry
from plait.controlplane.store import SqliteStore
from plait.security.labels import NAMESPACE_LABEL, TLS_LABEL
from plait.security.spiffe import SpiffeId
from plait.testing.clock import FakeClock

CART = "spiffe://cluster.local/ns/shop/sa/cart"
CLAIMS = {TLS_LABEL: "true", NAMESPACE_LABEL: "admin", "version": "v1"}


class Api:
    """The control plane's API app with security on (or `--insecure-dev`), in memory."""

    def __init__(self, tmp_path, *, required: bool = True) -> None:
        self.store = SqliteStore.open(tmp_path)
        self.db = open_db(tmp_path)
        self.table = LeaseTable.open(tmp_path)
        self.registry = Registry(now=FakeClock(), table=self.table)
        authority = Authority.open(tmp_path, trust_domain="cluster.local")
        self.security = Security.build(self.db, authority, required=required)
        self.app = create_app(store=self.store, registry=self.registry, security=self.security)

    def token(self, **join) -> str:
        if join:
            return self.security.tokens.create_join(created_by="test", **join)[0]
        return self.security.tokens.create_operator(Role.EDITOR, created_by="test")[0]

    def call(self, method: str, path: str, *, token: str | None = None, **kwargs):
        headers = {"authorization": f"Bearer {token}"} if token else {}

        async def go():
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.request(method, path, headers=headers, **kwargs)

        return asyncio.run(go())

    def register(self, token: str | None, **body):
        body = {"service": "cart", "address": "127.0.0.1", "port": 9080, **body}
        return self.call("POST", "/api/v1/registry/instances", token=token, json=body)

    def close(self) -> None:
        self.table.close()
        self.db.close()
        self.store.close()


@pytest.fixture
def api(tmp_path):
    a = Api(tmp_path)
    yield a
    a.close()


def listed(api: Api) -> dict:
    services = api.call("GET", "/api/v1/registry/services", token=api.token()).json()
    return {i["instanceId"]: i for s in services["services"] for i in s["instances"]}


def test_a_workload_registration_records_its_identity_and_drops_claims(api) -> None:
    r = api.register(api.token(namespace="shop", account="cart"), labels=CLAIMS)
    assert r.status_code == 201, r.text
    assert r.json()["spiffeId"] == CART
    [instance] = api.registry.instances()["cart"]
    assert (instance.spiffe_id, instance.labels) == (CART, {"version": "v1"})
    assert listed(api)["cart-127.0.0.1:9080"]["spiffeId"] == CART


def test_the_body_cannot_name_an_identity(api) -> None:
    token = api.token(namespace="shop", account="cart")
    for field in ("spiffeId", "spiffe_id"):
        r = api.register(token, **{field: "spiffe://cluster.local/ns/shop/sa/admin"})
        assert r.status_code == 400, r.text
        assert field in r.json()["error"]["path"]
    assert api.registry.instances() == {}


def test_an_operator_registration_has_no_identity_and_no_claims(api) -> None:
    r = api.register(api.token(), labels=CLAIMS, service="legacy")
    assert r.status_code == 201, r.text
    [instance] = api.registry.instances()["legacy"]
    assert (instance.spiffe_id, instance.labels) == ("", {"version": "v1"})


def test_a_certificate_holder_registers_as_its_certificate_names() -> None:
    spiffe = SpiffeId("cluster.local", "shop", "cart")
    workload = Principal(Kind.WORKLOAD, CART, spiffe_id=spiffe, services=("cart",))
    assert registrant(workload, CLAIMS) == ({"version": "v1"}, CART)
    join = Principal(Kind.JOIN, "0a1b2c3d4e5f", spiffe_id=spiffe, services=("cart",))
    assert registrant(join, CLAIMS) == ({"version": "v1"}, CART)


def test_without_authentication_labels_are_kept_as_sent(tmp_path) -> None:
    api = Api(tmp_path, required=False)  # --insecure-dev: the old rule, by its labels
    try:
        assert api.register(None, labels=CLAIMS).status_code == 201
        [instance] = api.registry.instances()["cart"]
        assert (instance.spiffe_id, instance.labels) == ("", CLAIMS)
        # A workload that does send its token is still known by it.
        token = api.token(namespace="shop", account="cart")
        assert api.register(token, labels=CLAIMS, port=9081).json()["spiffeId"] == CART
    finally:
        api.close()


def restored(path) -> list[Instance]:
    """The instances a restarted control plane serves from the lease table at `path`."""
    table = LeaseTable.open(path)
    try:
        return [lease.instance for lease in Registry(now=FakeClock(), table=table).leases()]
    finally:
        table.close()


def test_the_identity_survives_health_changes_and_a_restart(api, tmp_path) -> None:
    lease = api.register(api.token(namespace="shop", account="cart")).json()["leaseId"]
    api.registry.heartbeat(lease, healthy=False)
    assert api.registry.instances()["cart"][0].spiffe_id == CART
    [instance] = restored(tmp_path)
    assert (instance.spiffe_id, instance.healthy) == (CART, False)


def _store_old_row(path, port: int, labels: dict, **extra) -> None:
    """A row as a control plane before secure naming wrote it (no spiffeId)."""
    doc = {"service": "cart", "address": "127.0.0.1", "port": port, "protocol": "http",
           "labels": labels, "healthy": True, **extra}
    with sqlite3.connect(path / "plait.db") as db:
        db.execute("INSERT INTO leases VALUES (?, ?, ?, ?)",
                   (f"lease{port}", f"cart-{port}", 10.0, json.dumps(doc)))


def test_rows_from_before_identities_were_recorded(tmp_path, capsys) -> None:
    LeaseTable.open(tmp_path).close()
    _store_old_row(tmp_path, 9080, {"version": "v1"})
    _store_old_row(tmp_path, 9081, {TLS_LABEL: "true", NAMESPACE_LABEL: "shop"})
    _store_old_row(tmp_path, 9082, {}, spiffeId="not-a-spiffe-id")
    instances = restored(tmp_path)
    # A plaintext instance stays as it was; one that took mTLS on its word is dropped, so
    # its sidecar's next heartbeat (404) registers it again, with its identity.
    assert [(i.port, i.spiffe_id) for i in instances] == [(9080, "")]
    err = capsys.readouterr().err
    assert "stored lease lease9081 of cart-9081 dropped: registered before" in err
    assert "stored lease lease9082" in err
