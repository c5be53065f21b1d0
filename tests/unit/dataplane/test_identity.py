"""The sidecar's workload identity: first certificate with a join token, renewal at half
life over mTLS, bundle polling; on an injected clock, against a real mesh CA object."""

from __future__ import annotations

import asyncio
import datetime
import json
import stat

import pytest
from cryptography import x509

from plait.controlplane.ca import Authority
from plait.dataplane.http.client import ClientError
from plait.dataplane.identity import IdentityRefused, WorkloadIdentity, prepare
from plait.security.workload import BUNDLE_PATH, CSR_PATH

UTC = datetime.timezone.utc
TOKEN = "plait-join-0123456789abcdef"
API = "https://127.0.0.1:1"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime.datetime:
        return self.now


class FakeCa:
    """What `POST /api/v1/ca/certificates` and `GET /api/v1/ca/bundle` answer."""

    def __init__(self, ca: Authority, *, down: bool = False) -> None:
        self.ca = ca
        self.down = down
        self.calls: list[tuple[str, str]] = []  # (path, how the caller proved itself)

    async def post(self, method, url, body=b"", *, content_type="", auth=None, timeout=5.0):
        if self.down:
            raise ClientError("connection refused")
        path = url.removeprefix(API)
        headers = dict(auth.headers()) if auth else {}
        context = auth.ssl_context() if auth else None
        how = "token" if headers.get("authorization") == f"Bearer {TOKEN}" else (
            "bad-token" if "authorization" in headers else "certificate")
        self.calls.append((path, how))
        assert context is not None, "an https API always gets a TLS context"
        if path == BUNDLE_PATH:
            return 200, self.ca.bundle_pem.encode()
        assert path == CSR_PATH and method == "POST"
        if how == "bad-token":
            return 401, json.dumps({"error": {"path": "", "reason": "unknown token"}}).encode()
        csr = x509.load_pem_x509_csr(body)
        issued = self.ca.issue_workload(csr.public_key(),
                                        spiffe_uri="spiffe://cluster.local/ns/shop/sa/b")
        return 201, json.dumps({"certificateChain": issued.chain_pem,
                                "trustBundle": issued.bundle_pem}).encode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ca(tmp_path, clock) -> Authority:
    return Authority.open(tmp_path / "cp", trust_domain="cluster.local", now=clock,
                          cert_ttl=datetime.timedelta(seconds=20))


def identity(tmp_path, ca, clock, *, token=TOKEN, **fake) -> tuple[WorkloadIdentity, FakeCa]:
    server = FakeCa(ca, **fake)
    bundle = tmp_path / "trust.pem"
    bundle.write_text(ca.bundle_pem)
    return WorkloadIdentity(api=API, cert_dir=tmp_path / "id", token=token,
                            ca_file=str(bundle), now=clock, post=server.post), server


def test_first_certificate_with_the_join_token(tmp_path, ca, clock) -> None:
    ident, server = identity(tmp_path, ca, clock)
    asyncio.run(ident.obtain())
    assert str(ident.spiffe_id) == "spiffe://cluster.local/ns/shop/sa/b"
    assert server.calls == [(CSR_PATH, "token")]
    assert stat.S_IMODE(ident.files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(ident.files.directory.stat().st_mode) == 0o700
    assert ident.files.has_certificate()
    assert ident.headers() == [], "with a certificate over https, no token is sent"
    assert ident.registry_labels() == {"security.plait.io/tls": "true",
                                       "security.plait.io/namespace": "shop"}


def test_no_token_and_no_certificate_gets_nothing(tmp_path, ca, clock) -> None:
    ident, server = identity(tmp_path, ca, clock, token=None)
    with pytest.raises(IdentityRefused):
        asyncio.run(ident.obtain())
    assert server.calls == [] and not ident.files.has_certificate()


def test_a_refused_token_ends_start_up(tmp_path, ca, clock) -> None:
    ident, server = identity(tmp_path, ca, clock, token="wrong-token")
    with pytest.raises(IdentityRefused, match="401: unknown token") as err:
        asyncio.run(ident.obtain())
    assert "wrong-token" not in str(err.value)
    assert not ident.files.has_certificate()


def test_renewal_at_half_life_over_mtls(tmp_path, ca, clock) -> None:
    ident, server = identity(tmp_path, ca, clock)
    asyncio.run(ident.obtain())
    assert ident.seconds_until_renewal() == pytest.approx(10.0)
    clock.now += datetime.timedelta(seconds=4)
    assert ident.seconds_until_renewal() == pytest.approx(6.0)
    slept: list[float] = []
    renewed = []
    ident.listeners.append(lambda: renewed.append(clock.now))

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += datetime.timedelta(seconds=seconds)
        if len(slept) == 3:
            raise asyncio.CancelledError

    ident.sleep = sleep
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(ident._renew_forever())
    assert slept == pytest.approx([6.0, 10.0, 10.0])
    assert len(renewed) == 2 and ident.renewals == 3
    assert [how for _, how in server.calls] == ["token", "certificate", "certificate"]


def test_renewal_retries_sooner_when_the_ca_is_down(tmp_path, ca, clock) -> None:
    ident, server = identity(tmp_path, ca, clock)
    asyncio.run(ident.obtain())
    server.down = True
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += datetime.timedelta(seconds=seconds)
        if len(slept) == 4:
            raise asyncio.CancelledError

    ident.sleep = sleep
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(ident._renew_forever())
    # at half life (10 s), then a tenth of what is left (1 s), then at once (overdue) ...
    assert slept[:3] == pytest.approx([10.0, 1.0, 0.0])
    assert ident.failures >= 2


def test_start_up_with_the_ca_down_uses_a_valid_certificate_on_disk(tmp_path, ca, clock) -> None:
    ident, _ = identity(tmp_path, ca, clock)
    asyncio.run(ident.obtain())
    again, server = identity(tmp_path, ca, clock, down=True)
    asyncio.run(again.obtain())
    assert again.valid() and again.failures == 1


def test_the_bundle_poll_picks_up_a_rotation(tmp_path, ca, clock) -> None:
    ident, server = identity(tmp_path, ca, clock)
    asyncio.run(ident.obtain())
    assert ident.poll_interval() == pytest.approx(2.5)
    assert not asyncio.run(ident.fetch_bundle())
    ca.rotate()
    changes = []
    ident.listeners.append(lambda: changes.append(1))
    assert asyncio.run(ident.fetch_bundle())
    assert len(x509.load_pem_x509_certificates(ident.files.bundle.read_bytes())) == 2
    assert changes == [1]


def test_prepare_reads_flags(tmp_path) -> None:
    assert prepare(api="http://x", node_id="n") == (None, "")
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    ident, where = prepare(api="http://127.0.0.1:9", node_id="a/b", token_file=str(token),
                           cache_dir=str(tmp_path))
    assert ident.token == TOKEN and where.endswith("a_b.identity")
    assert ident.headers() == [("authorization", f"Bearer {TOKEN}")], "plain http: token"
    with pytest.raises(ValueError, match="--registry"):
        prepare(api="", node_id="n", token_file=str(token), cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="cannot read"):
        prepare(api="http://x", node_id="n", token_file=str(tmp_path / "missing"),
                cache_dir=str(tmp_path))
