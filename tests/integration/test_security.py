"""A secure `plait control` as operators run it: API over TLS, tokens with roles, a
sidecar-like client that enrolls with a join token and renews over mTLS, root rotation
seen by real handshakes, the audit log, and no secret in any answer or log line."""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess

import httpx
import pytest
from cryptography import x509

from plait.security.spiffe import SpiffeId, spiffe_uris
from plait.security.workload import IdentityFiles
from plait.testing.control import PLAIT, run_cli, start_control

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  http: [{{timeout: {timeout}, route: [{{destination: {{host: {name}}}}}]}}]
"""
YAML = {"content-type": "application/yaml"}


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    cp = start_control(tmp_path_factory.mktemp("secure"), api_tls=True)
    yield cp
    cp.stop()


def client(cp, token: str | None = None, *, cert=None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    verify = ssl.create_default_context(cafile=cp.ca_file)
    if cert:
        verify.load_cert_chain(*cert)
    return httpx.Client(base_url=cp.api_url, headers=headers, verify=verify, timeout=10)


def new_token(cp, *args: str) -> str:
    made = run_cli(cp, "token", "create", *args)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def register(api: httpx.Client, service: str, port: int, **extra) -> httpx.Response:
    return api.post("/api/v1/registry/instances",
                    json={"service": service, "address": "127.0.0.1", "port": port, **extra})


def test_nothing_but_healthz_answers_without_a_valid_token(control):
    assert stat.S_IMODE((control.data_dir / "admin.token").stat().st_mode) == 0o600
    with client(control) as anon, client(control, "plt_000000000000." + "A" * 43) as forged:
        assert anon.get("/healthz").status_code == 200
        for method, path in (("GET", "/api/v1/resources/vs"), ("GET", "/openapi.json"),
                             ("GET", "/api/v1/ca/bundle"), ("GET", "/api/v1/registry/services")):
            r = anon.request(method, path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert "missing credentials" in r.json()["error"]["reason"]
        for api in (anon, forged):
            r = api.post("/api/v1/apply", content=VS.format(name="sneaky", timeout="1s"), headers=YAML)
            assert r.status_code == 401
            assert api.post("/api/v1/tokens", json={"kind": "operator", "role": "admin"}).status_code == 401
        r = anon.get("/api/v1/healthz", headers={"authorization": "Basic Zm9vOmJhcg=="})
        assert r.status_code == 401 and "Bearer" in r.json()["error"]["reason"]
    with client(control, control.token) as admin:
        assert admin.get("/api/v1/resources/vs/default/sneaky").status_code == 404
        counters = admin.get("/api/v1/auth/counters").json()["counters"]
    assert counters["auth_missing"] >= 6 and counters["auth_unknown_token"] >= 2
    assert counters["auth_malformed"] >= 1
    cli = run_cli(control.api_url, "get", "vs")  # neither token nor bundle in the environment
    assert cli.returncode == 1 and "(set PLAIT_CA_FILE to the mesh trust bundle)" in cli.stderr
    env = {**os.environ, "PLAIT_CONTROL": control.api_url, "PLAIT_CA_FILE": str(control.ca_file)}
    env.pop("PLAIT_TOKEN", None)
    cli = subprocess.run([*PLAIT, "get", "vs"], env=env, capture_output=True, text=True, timeout=30)
    assert cli.returncode == 1 and "missing credentials" in cli.stderr
    assert "(set PLAIT_TOKEN or PLAIT_TOKEN_FILE)" in cli.stderr


def test_roles_viewer_reads_editor_writes_admin_manages_tokens(control):
    viewer, editor = new_token(control, "--role", "viewer"), new_token(control, "--role", "editor")
    body = VS.format(name="ratings", timeout="1s")
    with client(control, viewer) as v, client(control, editor) as e:
        assert v.get("/api/v1/resources/vs").status_code == 200
        r = v.post("/api/v1/apply", content=body, headers=YAML)
        assert r.status_code == 403 and r.json()["error"]["reason"] == (
            "needs the editor role; this token has viewer")
        assert v.get("/api/v1/resources/vs/default/ratings").status_code == 404  # nothing stored
        assert register(v, "ratings", 9000).status_code == 403
        assert v.get("/api/v1/tokens").status_code == 403 and v.get("/api/v1/audit").status_code == 403
        assert e.post("/api/v1/apply", content=body, headers=YAML).status_code == 200
        assert e.post("/api/v1/tokens", json={"kind": "operator", "role": "admin"}).status_code == 403
        assert e.post("/api/v1/ca/rotate", json={}).status_code == 403
    listed = run_cli(control, "token", "list", "-o", "json")
    assert {t["role"] for t in json.loads(listed.stdout) if t["kind"] == "operator"} >= {
        "viewer", "editor", "admin"}


def test_a_sidecar_enrolls_with_a_join_token_then_renews_over_mtls(control, tmp_path):
    join = new_token(control, "--ns", "shop", "--sa", "cart", "--service", "cart", "--service", "basket")
    files = IdentityFiles(tmp_path / "identity")
    expected = SpiffeId("cluster.local", "shop", "cart")
    with client(control, join) as sidecar:
        # A CSR naming another identity is refused, not rewritten.
        from plait.security import keys
        greedy = keys.build_csr(files.ensure_key(), SpiffeId("cluster.local", "shop", "admin"))
        r = sidecar.post("/api/v1/ca/certificates", content=greedy)
        assert r.status_code == 403 and "may only get spiffe://cluster.local/ns/shop/sa/cart" in r.text
        r = sidecar.post("/api/v1/ca/certificates", content=b"garbage")
        assert r.status_code == 400 and r.json()["error"]["path"] == "csr"

        r = sidecar.post("/api/v1/ca/certificates", content=files.csr(),
                         headers={"content-type": "application/pkcs10"})
        assert r.status_code == 201, r.text
        assert files.save(r.json()) == expected
        assert spiffe_uris(files.certificate()) == [expected.uri]
        assert sidecar.get("/api/v1/ca/bundle").text == files.bundle.read_text()

        assert register(sidecar, "basket", 9101).status_code == 201
        r = register(sidecar, "payments", 9102)
        assert r.status_code == 403 and r.json()["error"]["path"] == "service"
        assert sidecar.get("/api/v1/resources/vs").status_code == 403  # workloads read no config
    with client(control, control.token) as admin:
        r = admin.post("/api/v1/ca/certificates", content=files.csr())
        assert r.status_code == 403 and "workloads" in r.json()["error"]["reason"]
        foreign = register(admin, "payments", 9103).json()["leaseId"]

    # Renewal and registration with the certificate alone (no token).
    with client(control, cert=(str(files.cert_chain), str(files.key))) as mtls:
        r = mtls.post("/api/v1/ca/certificates", content=files.csr())
        assert r.status_code == 201 and r.json()["spiffeId"] == expected.uri
        files.save(r.json())
        lease = register(mtls, "cart", 9104)
        assert lease.status_code == 201, lease.text
        assert mtls.put(f"/api/v1/registry/leases/{lease.json()['leaseId']}").status_code == 200
        r = mtls.put(f"/api/v1/registry/leases/{foreign}")
        assert r.status_code == 403 and "payments" in r.json()["error"]["reason"]
        assert mtls.delete(f"/api/v1/registry/leases/{foreign}").status_code == 403
        assert mtls.post("/api/v1/apply", content=VS.format(name="cart", timeout="1s"),
                         headers=YAML).status_code == 403


def test_a_client_certificate_from_another_ca_cannot_even_connect(control, tmp_path):
    from plait.controlplane.ca import Authority
    from plait.testing.tls import enroll

    other = Authority.open(tmp_path / "other", trust_domain="cluster.local")
    intruder = enroll(other, tmp_path / "intruder", "cart", namespace="shop")
    with client(control, cert=(str(intruder.cert_chain), str(intruder.key))) as api:
        with pytest.raises(httpx.HTTPError):
            api.get("/api/v1/ca/bundle")


def test_the_audit_log_names_the_token_and_shows_the_diff(control):
    editor = new_token(control, "--role", "editor")
    editor_id = editor.removeprefix("plt_").split(".")[0]
    with client(control, editor) as e, client(control, control.token) as admin:
        after = max([0] + [x["seq"] for x in admin.get("/api/v1/audit", params={"limit": 1000}).json()["entries"]])
        assert e.post("/api/v1/apply", content=VS.format(name="orders", timeout="1s"), headers=YAML).status_code == 200
        assert e.post("/api/v1/apply", content=VS.format(name="orders", timeout="3s"), headers=YAML).status_code == 200
        entries = admin.get("/api/v1/audit", params={"after": after}).json()["entries"]
    change = [x for x in entries if x["resource"] == "VirtualService default/orders"]
    assert [x["actor"] for x in change] == [editor_id, editor_id]
    assert all(x["method"] == "POST" and x["path"] == "/api/v1/apply" and x["status"] == 200 for x in change)
    assert change[1]["diff"].endswith("-    timeout: 1s\n+    timeout: 3s\n")
    shown = run_cli(control, "audit", "--after", str(after), "--diff")
    assert shown.returncode == 0 and "+    timeout: 3s" in shown.stdout and editor_id in shown.stdout


def test_no_secret_appears_in_any_answer_or_log_line(tmp_path):
    seen: list[str] = []

    def keep(response: httpx.Response) -> None:
        response.read()
        if not (response.request.url.path == "/api/v1/tokens" and response.request.method == "POST"):
            seen.append(response.text + json.dumps(dict(response.headers)))

    cp = start_control(tmp_path / "cp", api_tls=True)
    try:
        hooks = {"response": [keep]}
        secrets = [cp.token]
        verify = ssl.create_default_context(cafile=cp.ca_file)
        with httpx.Client(base_url=cp.api_url, verify=verify, event_hooks=hooks, timeout=10) as api:
            admin = {"authorization": f"Bearer {cp.token}"}
            for body in ({"kind": "operator", "role": "viewer"},
                         {"kind": "join", "namespace": "shop", "serviceAccount": "cart"}):
                secrets.append(api.post("/api/v1/tokens", json=body, headers=admin).json()["token"])
            files = IdentityFiles(tmp_path / "id")
            api.post("/api/v1/ca/certificates", content=files.csr(),
                     headers={"authorization": f"Bearer {secrets[2]}"})
            for token in secrets:  # use each, misuse each
                api.get("/api/v1/tokens", headers={"authorization": f"Bearer {token}"})
                api.get("/api/v1/tokens", headers={"authorization": f"Bearer {token}x"})
                api.get("/api/v1/tokens", headers={"authorization": f"Token {token}"})
            for path in ("/api/v1/tokens", "/api/v1/audit", "/api/v1/ca", "/api/v1/auth/counters",
                         "/openapi.json", "/api/v1/ca/bundle"):
                assert api.get(path, headers=admin).status_code == 200
            revoke = secrets[1].removeprefix("plt_").split(".")[0]
            assert api.delete(f"/api/v1/tokens/{revoke}", headers=admin).status_code == 200
            api.get("/api/v1/tokens", headers={"authorization": f"Bearer {secrets[1]}"})
        listed = run_cli(cp, "token", "list", "-o", "json").stdout + run_cli(cp, "audit", "-o", "json").stdout
    finally:
        cp.stop()
    logs = cp.stderr() + "\n".join(cp.process.stdout_lines())
    assert "401 GET /api/v1/tokens" in logs  # the misuse was logged ...
    key_files = [files.key, *sorted((cp.data_dir / "ca" / "roots").glob("*/key.pem")),
                 cp.data_dir / "api-tls" / "key.pem"]
    private = [p.read_text().split("-----")[2].strip().splitlines()[0] for p in key_files]
    for secret in [*secrets, *(s.split(".")[1] for s in secrets), *private]:
        for text in (*seen, logs, listed):
            assert secret not in text  # ... but never with a secret
    assert all("PRIVATE KEY" not in text for text in (*seen, logs, listed))


def test_root_rotation_through_the_api_and_real_handshakes(tmp_path):
    cp = start_control(tmp_path / "cp", api_tls=True)
    try:
        with client(cp, cp.token) as admin:
            join = admin.post("/api/v1/tokens", json={"kind": "join", "namespace": "shop",
                                                      "serviceAccount": "cart"}).json()["token"]
        old = IdentityFiles(tmp_path / "old")
        with client(cp, join) as sidecar:
            old.save(sidecar.post("/api/v1/ca/certificates", content=old.csr()).json())

        rotated = run_cli(cp, "ca", "rotate")
        assert rotated.returncode == 0 and "both roots are trusted" in rotated.stdout
        assert len(x509.load_pem_x509_certificates(cp.ca_file.read_bytes())) == 2
        new = IdentityFiles(tmp_path / "new")
        with client(cp, cert=(str(old.cert_chain), str(old.key))) as mtls:  # the old root still counts
            new.save(mtls.post("/api/v1/ca/certificates", content=new.csr()).json())
        assert new.certificate().issuer != old.certificate().issuer
        for files in (old, new):  # during the overlap both certificates get in
            with client(cp, cert=(str(files.cert_chain), str(files.key))) as mtls:
                assert mtls.get("/api/v1/ca/bundle").status_code == 200
        assert run_cli(cp, "ca", "rotate").returncode == 1  # one rotation at a time

        assert run_cli(cp, "ca", "rotate", "--finish").returncode == 0
        status = json.loads(run_cli(cp, "ca", "status", "-o", "json").stdout)
        assert [r["role"] for r in status["roots"]] == ["active"] and status["rotation"] is None
        with client(cp, cert=(str(new.cert_chain), str(new.key))) as mtls:
            assert mtls.get("/api/v1/ca/bundle").status_code == 200
        with client(cp, cert=(str(old.cert_chain), str(old.key))) as mtls:
            with pytest.raises(httpx.HTTPError):  # the API no longer trusts the old root
                mtls.get("/api/v1/ca/bundle")
    finally:
        assert cp.stop() == 0, cp.stderr()
