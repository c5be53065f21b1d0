"""Security end to end: join tokens, workload certificates, mTLS between sidecars,
PeerAuthentication and AuthorizationPolicy, renewal and root rotation under load, and no
secret in any output. One secure control plane (API and xDS over TLS, 20 s certificates)
and two apps, a (calls b) and b, in namespace shop, shared by the tests of this module."""

from __future__ import annotations

import re
import ssl
import stat
import threading
import time
from collections import Counter
from http.client import HTTPConnection

import httpx
import pytest
from cryptography import x509

from plait.controlplane.ca import Authority
from plait.testing import mtls, procs
from plait.testing.mesh import wait_until
from plait.testing.secure_mesh import SecureMesh

A_ID = "spiffe://cluster.local/ns/shop/sa/a"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = SecureMesh(tmp_path_factory.mktemp("secure-mesh"))
    try:
        m.add_app("b")
        m.add_app("a", dependencies=("b",))
        m.wait_registered("b", {"b"}, timeout=10)
        m.wait_routable(m.apps["a"], "b", {"b"}, timeout=10)
        yield m
    finally:
        m.close()


def apply(mesh: SecureMesh, text: str) -> None:
    mesh.apply_api(text)


def delete(mesh: SecureMesh, kind: str, name: str, namespace: str = "shop") -> None:
    gone = mesh.api("DELETE", f"/api/v1/resources/{kind}/{namespace}/{name}")
    assert gone.status_code in (200, 404), gone.text  # 404: the test failed before it


def direct(mesh: SecureMesh, app: str, path: str = "/echo", **options):
    """A request straight to an app's inbound listener (not through a sidecar)."""
    return mtls.request(mesh.apps[app].inbound_port, path, host=app, **options)


def plaintext_refused(mesh: SecureMesh, app: str) -> bool:
    try:
        direct(mesh, app)
    except OSError:  # reset, or closed before an answer
        return True
    return False


# -- identity -----------------------------------------------------------------------------------

def _start_failing(mesh: SecureMesh, service: str, **options) -> tuple[int, str]:
    app = mesh.add_app(service, sidecar=False, **options)
    process, _ = procs.start(app.argv(), name=f"sidecar {service}")
    try:
        code = process.wait(20.0)
    finally:
        process.stop(grace=1.0)
    return code, process.stderr_text()


def test_a_sidecar_without_a_valid_token_gets_nothing(mesh) -> None:
    code, err = _start_failing(mesh, "c", token="plait-join-not-a-real-token")
    assert code == 1, err
    assert "refused the certificate request (401" in err
    assert "not-a-real-token" not in err, "the token is never printed"
    assert not mesh.apps["c"].identity.cert_chain.exists()
    code, err = _start_failing(mesh, "d", with_token=False)
    assert code == 1 and "no join token" in err, err
    assert not mesh.apps["d"].identity.cert_chain.exists()
    assert mesh.instances("c") == {} and mesh.instances("d") == {}


def test_a_workload_registers_only_its_own_services(mesh) -> None:
    other = mesh.add_app("e", token=mesh.token("shop", "not-e"))
    files = other.identity
    assert files.spiffe_id().uri == "spiffe://cluster.local/ns/shop/sa/not-e"
    body = {"service": "e", "address": "127.0.0.1", "port": other.inbound_port}
    context = ssl.create_default_context(cafile=str(mesh.control.ca_file))
    context.load_cert_chain(files.cert_chain, files.key)
    with httpx.Client(base_url=mesh.control.api_url, verify=context, timeout=10) as client:
        refused = client.post("/api/v1/registry/instances", json=body)
        assert refused.status_code == 403, refused.text
        mine = client.post("/api/v1/registry/instances", json={**body, "service": "not-e"})
        assert mine.status_code == 201, mine.text
        assert client.delete(f"/api/v1/registry/leases/{mine.json()['leaseId']}").is_success
    assert mesh.instances("e") == {}, "the sidecar's own attempts were refused too"
    other.stop_sidecar()


def test_sidecars_hold_their_keys_and_certificates(mesh) -> None:
    for name in ("a", "b"):
        files = mesh.apps[name].identity
        assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
        assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
        assert files.spiffe_id().uri == f"spiffe://cluster.local/ns/shop/sa/{name}"
    b = mesh.instances("b")["b"]
    assert b["spiffeId"] == "spiffe://cluster.local/ns/shop/sa/b", "recorded from b's credentials"
    assert not [k for k in b["labels"] if k.startswith("security.plait.io/")], b["labels"]


# -- mTLS between sidecars, PeerAuthentication ---------------------------------------------------

def test_calls_between_sidecars_use_mtls(mesh) -> None:
    a, b = mesh.apps["a"], mesh.apps["b"]
    assert a.call("b").status == 200
    wait_until(lambda: [e for e in b.access_log() if e.get("peer") == A_ID], timeout=5,
               what="b's access log names a as the mTLS peer")


def test_a_caller_accepts_at_an_endpoint_only_the_identity_that_registered_it(mesh) -> None:
    """Secure naming. The workload shop/misrouted registers an endpoint of its service at
    b's address: a valid mesh certificate answers there, but b's, not its own. A caller's
    sidecar refuses it after the handshake, before sending anything; b, at the address b
    registered, serves the same caller."""
    b = mesh.apps["b"]
    token = mesh.token("shop", "misrouted")
    context = ssl.create_default_context(cafile=str(mesh.control.ca_file))
    with httpx.Client(base_url=mesh.control.api_url, verify=context, timeout=10,
                      headers={"authorization": f"Bearer {token}"}) as client:
        registered = client.post("/api/v1/registry/instances", json={
            "service": "misrouted", "address": "127.0.0.1", "port": b.inbound_port,
            "labels": {"security.plait.io/tls": "true"}, "ttl": 120})
        assert registered.status_code == 201, registered.text
        try:
            assert registered.json()["spiffeId"] == "spiffe://cluster.local/ns/shop/sa/misrouted"
            caller = mesh.add_app("caller", dependencies=("b", "misrouted"))
            mesh.wait_routable(caller, "b", {"b"}, timeout=10)
            wait_until(lambda: caller.service_endpoints("misrouted")
                       == {f"127.0.0.1:{b.inbound_port}"}, timeout=10,
                       what="the caller knows the misrouted endpoint")
            served = b.upstream.count()["requests"]
            replies = [caller.call("misrouted") for _ in range(5)]
            assert [(r.status, r.headers.get("x-plait-error")) for r in replies] == \
                [(503, "upstream_connect_failure")] * 5
            assert b.upstream.count()["requests"] == served, "no request reached b"
            failed = [v for labels, v in caller.stats().series(
                "plait_upstream_cx_connect_fail_total") if labels["cluster"].endswith("|misrouted")]
            assert sum(failed) >= 5, failed
            reply = caller.call("b")
            assert (reply.status, reply.served_by) == (200, "b")
        finally:
            client.delete(f"/api/v1/registry/leases/{registered.json()['leaseId']}")
            if "caller" in mesh.apps and mesh.apps["caller"].running:
                mesh.apps["caller"].stop_sidecar()


def test_permissive_serves_plaintext_and_mtls_on_one_port(mesh) -> None:
    status, _, _ = direct(mesh, "b")
    assert status == 200
    status, _, _ = direct(mesh, "b", tls=mtls.context(mesh.apps["a"].identity))
    assert status == 200
    stats = mesh.apps["b"].stats()
    assert stats.value("plait_downstream_cx_plaintext_total", listener="inbound") >= 1
    assert stats.value("plait_downstream_cx_tls_total", listener="inbound") >= 1


def test_a_certificate_from_another_ca_is_rejected(mesh, tmp_path) -> None:
    foreign_ca = Authority.open(tmp_path / "foreign", trust_domain="cluster.local")
    mallory = mtls.issue_identity(foreign_ca, tmp_path / "mallory", namespace="shop",
                                  account="a")
    ctx = mtls.context(mallory)
    ctx.load_verify_locations(cafile=str(mesh.control.ca_file))  # it trusts the real mesh
    with pytest.raises((ssl.SSLError, ConnectionError)):
        direct(mesh, "b", tls=ctx)


def test_strict_refuses_plaintext_and_clients_without_certificates(mesh) -> None:
    apply(mesh, """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
""")
    try:
        wait_until(lambda: plaintext_refused(mesh, "b"), timeout=10,
                   what="b's inbound refuses plaintext")
        assert mesh.apps["a"].call("b").status == 200, "mTLS from a still works"
        with pytest.raises((ssl.SSLError, ConnectionError)):
            direct(mesh, "b", tls=mtls.bare_context(mesh.control.ca_file))
    finally:
        delete(mesh, "PeerAuthentication", "default")
    wait_until(lambda: not plaintext_refused(mesh, "b"), timeout=10,
               what="b takes plaintext again once the policy is gone")


# -- AuthorizationPolicy -------------------------------------------------------------------------

ALLOW_A_READS = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a-reads, namespace: shop}
spec:
  selector: {matchLabels: {app: b}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/a"]}}]
    to: [{operation: {methods: ["GET"]}}]
"""
DENY_ADMIN = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
"""


def test_authorization_policies_allow_and_deny_as_written(mesh) -> None:
    a = mesh.apps["a"]
    apply(mesh, ALLOW_A_READS)
    try:
        wait_until(lambda: direct(mesh, "b")[0] == 403, timeout=10,
                   what="b refuses callers other than a")
        status, headers, _ = direct(mesh, "b")
        assert headers["x-plait-error"] == "denied"
        assert a.call("b").status == 200
        posted = a.call("b", method="POST")
        assert (posted.status, posted.headers.get("x-plait-error")) == (403, "denied")
        apply(mesh, DENY_ADMIN)
        wait_until(lambda: a.call("b", "/admin/x").status == 403, timeout=10,
                   what="DENY on /admin* refuses a too")
        assert a.call("b", "/echo").status == 200
    finally:
        delete(mesh, "AuthorizationPolicy", "a-reads")
        delete(mesh, "AuthorizationPolicy", "no-admin")
    wait_until(lambda: direct(mesh, "b")[0] == 200, timeout=10, what="policies removed")
    b = mesh.apps["b"]
    assert b.stats().value("plait_rbac_denied_total", listener="inbound") >= 3
    denied = wait_until(lambda: [e for e in b.access_log() if e["error"] == "denied"],
                        timeout=5, what="refusals in b's access log")
    assert all("rbac_policy" in e for e in denied)
    wait_until(lambda: mesh.api("GET", "/api/v1/events", params={
        "type": "denied", "service": "b"}).json()["events"], timeout=10,
        what="a 'denied' event reaches the control plane")


# -- renewal and rotation under load -------------------------------------------------------------

class Load:
    """Requests from a's app through both sidecars, back to back, on two connections."""

    def __init__(self, mesh: SecureMesh) -> None:
        self.port = mesh.apps["a"].outbound_port
        self.results: Counter = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        conn = HTTPConnection("127.0.0.1", self.port, timeout=5)
        deadline = time.monotonic() + 120  # bounded whatever happens to the test
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn.request("GET", "/echo", headers={"host": "b"})
                resp = conn.getresponse()
                resp.read()
                self.results[resp.status] += 1
                if resp.status != 200:
                    self.errors.append(f"{resp.status} {resp.getheader('x-plait-error')}")
            except OSError as exc:
                self.results["error"] += 1
                self.errors.append(repr(exc))
                conn.close()
                conn = HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.close()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def _chain(app) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(app.identity.cert_chain.read_bytes())


def _bundle(app) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(app.identity.bundle.read_bytes())


def test_renewal_and_root_rotation_under_load_lose_no_request(mesh) -> None:
    apps = [mesh.apps["a"], mesh.apps["b"]]
    # New upstream connections (and handshakes) all along, not one pooled connection.
    apply(mesh, """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: shop}
spec:
  host: b
  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 5}}}
""")
    try:
        with Load(mesh) as load:
            first = {app.instance: _chain(app)[0].serial_number for app in apps}
            wait_until(lambda: all(_chain(app)[0].serial_number != first[app.instance]
                                   for app in apps), timeout=25,
                       what="both sidecars renewed their certificates", interval=0.2)
            old_root = _bundle(apps[0])[0]
            rotated = mesh.api("POST", "/api/v1/ca/rotate", json={})
            assert rotated.status_code == 200, rotated.text
            wait_until(lambda: all(_chain(app)[0].issuer != old_root.subject
                                   and len(_bundle(app)) == 2 for app in apps), timeout=25,
                       what="both sidecars hold a certificate of the new root and both roots",
                       interval=0.2)
            finished = mesh.api("POST", "/api/v1/ca/rotate", json={"finish": True})
            assert finished.status_code == 200, finished.text
            mesh.refresh_api()
            wait_until(lambda: all(len(_bundle(app)) == 1 for app in apps), timeout=10,
                       what="both sidecars dropped the old root", interval=0.2)
            seen = sum(load.results.values())
            wait_until(lambda: sum(load.results.values()) > seen + 50, timeout=10,
                       what="traffic after the rotation ended")
        assert load.results[200] > 500, load.results
        assert not load.errors, (load.results, load.errors[:5])
    finally:
        delete(mesh, "DestinationRule", "b")


# -- secrets ------------------------------------------------------------------------------------

def test_no_secret_in_any_log_or_api_output(mesh) -> None:
    keys = []
    for app in mesh.apps.values():
        if app.identity.key.exists():
            pem = mtls.key_pem_of(app.identity).decode()
            keys += [line for line in pem.splitlines() if "-----" not in line]
    assert keys and mesh.tokens
    secrets = [*mesh.tokens, *keys, mesh.control.token]
    outputs = [mesh.control.process.stderr_text(), "\n".join(mesh.control.process.stdout_lines())]
    for app in mesh.apps.values():
        if app.sidecar is not None:
            outputs += [app.sidecar.process.stderr_text(),
                        "\n".join(app.sidecar.process.stdout_lines())]
            if app.running:
                for path in ("/config_dump", "/stats/prometheus", "/clusters"):
                    outputs.append(app.admin.admin_request(path))
        if app.access_log_path().exists():
            outputs.append(app.access_log_path().read_text())
    for path in ("/api/v1/registry/services", "/api/v1/proxies", "/api/v1/tokens",
                 "/api/v1/audit", "/api/v1/ca", "/api/v1/events", "/api/v1/auth/counters",
                 "/api/v1/resources/AuthorizationPolicy"):
        answer = mesh.api("GET", path)
        assert answer.status_code == 200, (path, answer.text)
        outputs.append(answer.text)
    text = "\n".join(o if isinstance(o, str) else str(o) for o in outputs)
    assert len(text) > 10_000, "the outputs were really collected"
    for secret in secrets:
        assert secret not in text, f"a secret ({len(secret)} chars) appears in an output"
    assert not re.search(r"PRIVATE KEY", text)
