"""The TLS accept path in one process: PERMISSIVE tells TLS from plaintext by the first
byte, STRICT takes TLS only, and odd clients (silent, gone, slow, wrong certificate) are
closed and counted without disturbing anyone else. Real sockets and handshakes on
127.0.0.1; the listener answers by itself (direct_response), so no upstream is needed."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import uvloop

from plait.controlplane.ca import Authority
from plait.dataplane.bootstrap import parse_bootstrap
from plait.dataplane.net import permissive
from plait.dataplane.worker import Worker
from plait.testing import mtls
from plait.testing.mesh import free_port
from plait.testing import sidecar as sc

GET = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


@pytest.fixture(scope="module")
def ids(tmp_path_factory):
    root = tmp_path_factory.mktemp("ids")
    ca = Authority.open(root / "ca", trust_domain="cluster.local")
    other = Authority.open(root / "other", trust_domain="cluster.local")
    return {"server": mtls.issue_identity(ca, root / "s", namespace="shop", account="b"),
            "alice": mtls.issue_identity(ca, root / "a", namespace="shop", account="a"),
            "eve": mtls.issue_identity(ca, root / "e", namespace="evil", account="eve"),
            "foreign": mtls.issue_identity(other, root / "f", namespace="shop", account="a")}


def snapshot(mode: str, ids, *, port: int = 0, **tls_options):
    lis = sc.listener("inbound", [sc.virtual_host("all", ["*"], [sc.direct_route(200, "ok")])],
                      direction="INBOUND", port=port)
    socket_ = mtls.downstream_tls(ids["server"], **tls_options)
    if mode == "strict":
        lis = mtls.strict(lis, socket_)
    elif mode == "permissive":
        lis = mtls.permissive(lis, socket_)
    return parse_bootstrap(sc.bootstrap(listeners=[lis], clusters=[])).snapshot


def client_ctx(ids, who: str | None) -> ssl.SSLContext:
    ctx = mtls.context(ids[who]) if who else mtls.bare_context(ids["server"].bundle)
    ctx.load_verify_locations(cafile=str(ids["server"].bundle))
    return ctx


async def ask(port: int, *, tls: ssl.SSLContext | None = None, first: bytes = GET,
              delay: float = 0.0) -> bytes:
    """Send a request (optionally after `delay`); the whole answer, b"" if closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    try:
        if delay:
            await asyncio.sleep(delay)
        writer.write(first)
        return await asyncio.wait_for(reader.readuntil(b"ok"), 5)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        return getattr(exc, "partial", b"")
    finally:
        writer.close()


def run(mode: str, ids, scenario, *, port: int = 0, **tls_options):
    async def main():
        worker = Worker(snapshot(mode, ids, port=port, **tls_options), access_log=None)
        await worker.start({})
        try:
            return await scenario(worker, worker.listener_addresses()["inbound"][1])
        finally:
            worker.close()
    return uvloop.run(main())


def counters(worker) -> dict:
    return worker.stats.listener("inbound").counters


def test_permissive_serves_plaintext_and_tls_on_one_port(ids) -> None:
    async def scenario(worker, port):
        plain = await ask(port)
        secure = await ask(port, tls=client_ctx(ids, "alice"))
        late = await ask(port, delay=0.2)  # the first byte may come late
        return plain, secure, late, dict(counters(worker))

    plain, secure, late, seen = run("permissive", ids, scenario, require_client=True)
    for answer in (plain, secure, late):
        assert answer.startswith(b"HTTP/1.1 200"), answer
    assert seen["downstream_cx_plaintext_total"] == 2
    assert seen["downstream_cx_tls_total"] == 1


def test_tls_peers_must_verify_and_present_a_certificate(ids) -> None:
    async def scenario(worker, port):
        out = {}
        for who in ("foreign", None):
            try:
                out[who] = await ask(port, tls=client_ctx(ids, who))
            except (ssl.SSLError, ConnectionError):
                out[who] = b"refused"
        out["alice"] = await ask(port, tls=client_ctx(ids, "alice"))
        await asyncio.sleep(0.05)
        return out, dict(counters(worker))

    out, seen = run("permissive", ids, scenario, require_client=True)
    assert out["foreign"] in (b"", b"refused") and out[None] in (b"", b"refused")
    assert out["alice"].startswith(b"HTTP/1.1 200")
    assert seen["downstream_tls_handshake_error_total"] == 2


def test_strict_takes_no_plaintext(ids) -> None:
    async def scenario(worker, port):
        plain = await ask(port)
        secure = await ask(port, tls=client_ctx(ids, "alice"))
        await asyncio.sleep(0.05)
        return plain, secure, dict(counters(worker))

    plain, secure, seen = run("strict", ids, scenario, require_client=True)
    assert plain == b"" and secure.startswith(b"HTTP/1.1 200")
    assert seen["downstream_tls_handshake_error_total"] == 1


def test_a_peer_the_listener_does_not_name_is_closed(ids) -> None:
    async def scenario(worker, port):
        eve = await ask(port, tls=client_ctx(ids, "eve"))
        alice = await ask(port, tls=client_ctx(ids, "alice"))
        return eve, alice, dict(counters(worker))

    eve, alice, seen = run("strict", ids, scenario, require_client=True,
                           peer_names=[{"prefix": "spiffe://cluster.local/ns/shop/"}])
    assert eve == b"" and alice.startswith(b"HTTP/1.1 200")
    assert seen["downstream_tls_peer_rejected_total"] == 1


def test_silent_and_vanishing_clients_are_let_go(ids, monkeypatch) -> None:
    monkeypatch.setattr(permissive, "PEEK_TIMEOUT", 0.2)

    async def scenario(worker, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        silent = await asyncio.wait_for(reader.read(), 5)  # closed by the peek deadline
        writer.close()
        for _ in range(20):  # connect and go away at once
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
        await asyncio.sleep(0.1)
        listener = worker.managers["inbound"].server
        still_works = await ask(port)
        return silent, listener._opening, len(listener._peeking), still_works

    silent, opening, peeking, still_works = run("permissive", ids, scenario)
    assert silent == b""
    assert (opening, peeking) == (0, 0)
    assert still_works.startswith(b"HTTP/1.1 200")


def test_a_plaintext_listener_that_gains_tls_keeps_its_port(ids) -> None:
    async def scenario(worker, port):
        before = await ask(port)
        await worker.apply(snapshot("permissive", ids, port=port, require_client=True))
        after_plain = await ask(port)
        after_tls = await ask(port, tls=client_ctx(ids, "alice"))
        return before, after_plain, after_tls, type(worker.managers["inbound"].server)

    before, plain, secure, server = run("plaintext", ids, scenario, port=free_port())
    assert server is permissive.TlsListener
    for answer in (before, plain, secure):
        assert answer.startswith(b"HTTP/1.1 200"), answer
