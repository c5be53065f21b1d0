"""TLS to upstream endpoints, two workers in one process: a caller whose clusters use mTLS
(by transport_socket, or per endpoint by transport_socket_matches) and a STRICT listener.
A server whose SPIFFE ID the cluster does not expect, a plaintext cluster to a TLS-only
port, and TLS without a certificate to present all fail as connect failures (503)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from plait.controlplane.ca import Authority
from plait.dataplane.bootstrap import parse_bootstrap
from plait.dataplane.worker import Worker
from plait.testing import mtls
from plait.testing import sidecar as sc

B_ID = "spiffe://cluster.local/ns/shop/sa/b"


@pytest.fixture(scope="module")
def ids(tmp_path_factory):
    root = tmp_path_factory.mktemp("ids")
    ca = Authority.open(root / "ca", trust_domain="cluster.local")
    return {"a": mtls.issue_identity(ca, root / "a", namespace="shop", account="a"),
            "b": mtls.issue_identity(ca, root / "b", namespace="shop", account="b")}


def server(ids):
    lis = sc.listener("inbound", [sc.virtual_host("all", ["*"], [sc.direct_route(200, "ok")])],
                      direction="INBOUND")
    lis = mtls.strict(lis, mtls.downstream_tls(ids["b"]))
    return parse_bootstrap(sc.bootstrap(listeners=[lis], clusters=[])).snapshot


def caller(ids, port: int):
    def tls_cluster(name: str, **options) -> dict:
        c = sc.cluster(name, [port])
        c["transport_socket"] = mtls.upstream_tls(ids["a"], **options)
        return c

    matched = sc.cluster("matched", [port])
    matched["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"] = {
        "filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "plait"}}}
    matched["transport_socket_matches"] = [{"name": "mtls", "match": {"tlsMode": "plait"},
                                            "transport_socket": mtls.upstream_tls(ids["a"])}]
    unmatched = sc.cluster("unmatched", [port])
    unmatched["transport_socket_matches"] = matched["transport_socket_matches"]
    sds = sc.cluster("sds", [port])
    sds["transport_socket"] = mtls.upstream_tls(None)  # the sidecar's own identity: none here
    clusters = [tls_cluster("right", peer_names=[{"exact": B_ID}]),
                tls_cluster("wrong", peer_names=[{"exact": "spiffe://cluster.local/ns/x/sa/z"}]),
                sc.cluster("plain", [port]), matched, unmatched, sds]
    routes = [sc.route(c["name"], prefix=f"/{c['name']}") for c in clusters]
    lis = sc.listener("outbound", [sc.virtual_host("all", ["*"], routes)])
    return parse_bootstrap(sc.bootstrap(listeners=[lis], clusters=clusters)).snapshot


async def get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET %s HTTP/1.1\r\nhost: b\r\n\r\n" % path.encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        error = [line.split(": ", 1)[1] for line in head.split("\r\n")
                 if line.lower().startswith("x-plait-error")]
        return int(head.split()[1]), error[0] if error else ""
    finally:
        writer.close()


def test_tls_clusters(ids) -> None:
    async def main():
        b = Worker(server(ids), access_log=None)
        await b.start({})
        port = b.listener_addresses()["inbound"][1]
        a = Worker(caller(ids, port), access_log=None)
        await a.start({})
        out = a.listener_addresses()["outbound"][1]
        try:
            return {name: await get(out, f"/{name}") for name in
                    ("right", "wrong", "plain", "matched", "unmatched", "sds")}
        finally:
            a.close()
            b.close()

    got = uvloop.run(main())
    assert got["right"] == (200, "") and got["matched"] == (200, "")
    assert got["wrong"] == (503, "upstream_connect_failure")
    assert got["sds"] == (503, "upstream_connect_failure"), "no identity: fail closed"
    assert got["plain"][0] == 503 and got["unmatched"][0] == 503, "plaintext to STRICT"
