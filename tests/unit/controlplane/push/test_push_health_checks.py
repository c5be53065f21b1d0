"""HealthCheck → `Cluster.health_checks` on the callers' clusters: which clusters get
which check, in Envoy's shape, and that the sidecar's own compiler takes every one (with
the endpoints' TLS beside it when the caller speaks mTLS)."""

from __future__ import annotations

from plait.controlplane.push.proxy import ProxyInfo
from plait.controlplane.push.translate import translate
from plait.dataplane.config import HealthCheck
from plait.security.labels import TLS_LABEL
from plait.testing.meshview import FakeMeshView, compiled_snapshot
from plait.xds.resources import CLUSTER

RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pricing}
spec:
  host: pricing
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def check(name: str, *, subset: str = "", body: str = "http: {path: /healthz}") -> str:
    return f"""
apiVersion: plait.io/v1alpha1
kind: HealthCheck
metadata: {{name: {name}}}
spec:
  host: pricing
  {f"subset: {subset}" if subset else ""}
  {body}
"""


def mesh(*documents: str) -> FakeMeshView:
    view = FakeMeshView()
    view.register("pricing", "10.0.0.1", 8080, version="v1", **{TLS_LABEL: "true"})
    view.register("pricing", "10.0.0.2", 8080, version="v2", **{TLS_LABEL: "true"})
    view.register("stock", "10.0.2.1", 8080)
    view.apply_yaml("\n---\n".join([RULE, *documents]))
    return view


WEB = ProxyInfo.from_metadata("web-1", {"app": "web", "app_port": 9000})


def compiled(view, proxy: ProxyInfo = WEB) -> dict:
    """Cluster name → the sidecar's compiled ClusterConfig, from the translator's output."""
    out = translate(view, proxy)
    snapshot = compiled_snapshot(out)
    return dict(snapshot.clusters)


def checks(view, proxy: ProxyInfo = WEB) -> dict[str, HealthCheck | None]:
    return {name: c.health_check for name, c in compiled(view, proxy).items()
            if name.startswith("outbound|")}


def test_a_host_wide_check_goes_on_every_cluster_of_the_host():
    view = mesh(check("pricing", body="""http:
    path: /healthz?deep=1
    expectedStatuses: [{start: 200, end: 300}, {start: 418, end: 419}]
  interval: 2s
  timeout: 250ms
  unhealthyThreshold: 3
  healthyThreshold: 2"""))
    expected = HealthCheck(interval=2.0, timeout=0.25, unhealthy_threshold=3,
                           healthy_threshold=2, http_path="/healthz?deep=1",
                           http_host="pricing", expected=((200, 300), (418, 419)))
    assert checks(view) == {
        "outbound|8080||pricing": expected, "outbound|8080|v1|pricing": expected,
        "outbound|8080|v2|pricing": expected, "outbound|8080||stock": None}


def test_the_defaults_reach_the_sidecar_as_the_kind_documents_them():
    view = mesh(check("pricing"), check("tcp", body="tcp: {}").replace("host: pricing",
                                                                       "host: stock"))
    got = checks(view)
    # 200-399 is sent explicitly: Envoy, given no range, would accept 200 only
    assert got["outbound|8080||pricing"] == HealthCheck(
        interval=5.0, timeout=1.0, unhealthy_threshold=2, healthy_threshold=1,
        http_path="/healthz", http_host="pricing", expected=((200, 400),))
    assert got["outbound|8080||stock"] == HealthCheck(
        interval=5.0, timeout=1.0, unhealthy_threshold=2, healthy_threshold=1)
    out = translate(view, WEB)
    (sent,) = out[CLUSTER]["outbound|8080||pricing"].health_checks
    assert [(r.start, r.end) for r in sent.http_health_check.expected_statuses] == [(200, 400)]
    assert out[CLUSTER]["outbound|8080||stock"].health_checks[0].HasField("tcp_health_check")


def test_a_subset_check_covers_that_subset_only_and_wins_over_the_host_wide_one():
    view = mesh(check("v2-only", subset="v2", body="http: {path: /v2/ready, host: a:81}"))
    got = checks(view)
    assert got["outbound|8080||pricing"] is None and got["outbound|8080|v1|pricing"] is None
    assert (got["outbound|8080|v2|pricing"].http_path,
            got["outbound|8080|v2|pricing"].http_host) == ("/v2/ready", "a:81")

    view = mesh(check("a-wide"), check("b-wide", body="tcp: {}"),
                check("z-v2", subset="v2", body="tcp: {}"))
    got = checks(view)
    # one check per cluster: the subset's own first, then the first by namespace and name
    assert got["outbound|8080|v2|pricing"].http_path == ""
    assert got["outbound|8080|v1|pricing"].http_path == "/healthz"
    assert got["outbound|8080||pricing"].http_path == "/healthz"


def test_a_check_for_a_subset_nobody_defines_changes_nothing():
    view = mesh(check("v3", subset="v3"))
    assert set(checks(view).values()) == {None}


def test_only_callers_get_it_and_proxyless_clients_do_not():
    view = mesh(check("pricing"))
    pricing = ProxyInfo.from_metadata("pricing-1", {"app": "pricing", "app_port": 9000,
                                                    "dependencies": ["stock"]})
    own = compiled(view, pricing)
    assert any(name.startswith("inbound|") for name in own)  # its app: the callee's side
    assert all(c.health_check is None for c in own.values())
    out = translate(view, ProxyInfo(node_id="g"), listener_names=frozenset({"pricing"}))
    assert out[CLUSTER] and not any(c.health_checks for c in out[CLUSTER].values())


def test_with_auto_mtls_the_checked_endpoints_carry_their_tls():
    view = mesh(check("pricing"))
    secure = ProxyInfo.from_metadata("web-1", {"app": "web", "app_port": 9000, "mtls": True})
    cluster = compiled(view, secure)["outbound|8080||pricing"]
    assert cluster.health_check.http_path == "/healthz"
    # the probe connects to these endpoints as requests do (dataplane.upstream.health_check)
    assert [ep.tls is not None for ep in cluster.endpoints] == [True, True]


def test_deleting_the_check_takes_it_off():
    view = mesh(check("pricing"))
    assert checks(view)["outbound|8080||pricing"] is not None
    view.delete("HealthCheck", "pricing")
    assert set(checks(view).values()) == {None}
