"""PeerAuthentication and AuthorizationPolicy through the translator and into the sidecar's
compiler: the listener's TLS mode, and RBAC verdicts on requests, as Istio defines them."""

from __future__ import annotations

import pytest

from plait.codec.http1 import Request
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from plait.controlplane.push import security
from plait.controlplane.push.proxy import ProxyInfo
from plait.controlplane.push.translate import translate
from plait.dataplane import filters
from plait.dataplane.compile import compile_cluster, compile_endpoints, compile_listener
from plait.dataplane.net.tls_store import name_accepted
from plait.security.labels import NAMESPACE_LABEL, TLS_LABEL
from plait.testing.meshview import FakeMeshView
from plait.xds.resources import CLUSTER, ENDPOINT, LISTENER

SHOP_A = "spiffe://cluster.local/ns/shop/sa/a"
SHOP_C = "spiffe://cluster.local/ns/shop/sa/c"
OTHER = "spiffe://cluster.local/ns/other/sa/x"


def view(yaml_text: str = "") -> FakeMeshView:
    v = FakeMeshView()
    v.register("b", "127.0.0.1", 15006, **{TLS_LABEL: "true", NAMESPACE_LABEL: "shop"})
    v.register("b", "127.0.0.2", 15006)  # a sidecar without a certificate
    if yaml_text:
        v.apply_yaml(yaml_text)
    return v


def inbound(v: FakeMeshView, *, mtls: bool = True, **meta):
    proxy = ProxyInfo.from_metadata("b-1", {"app": "b", "app_port": 8080, "mtls": mtls,
                                            "namespace": "shop", **meta})
    out = translate(v, proxy)
    return compile_listener(out[LISTENER]["inbound"], {}, path="inbound")


def mode_of(cfg) -> str:
    if cfg.transport is None:
        return "plaintext"
    return "PERMISSIVE" if cfg.transport.permissive else "STRICT"


def pa(name: str, mode: str, *, namespace: str = "shop", selector: dict | None = None,
       ports: dict | None = None) -> str:
    sel = f"selector: {{matchLabels: {selector}}}" if selector else ""
    port_level = f"portLevelMtls: {ports}" if ports else ""
    return f"""
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  mtls: {{mode: {mode}}}
  {sel}
  {port_level}
"""


@pytest.mark.parametrize("yaml_text, expected", [
    ("", "PERMISSIVE"),
    (pa("mesh", "STRICT", namespace="istio-system"), "STRICT"),
    (pa("mesh", "STRICT", namespace="istio-system") + pa("ns", "DISABLE"), "plaintext"),
    (pa("ns", "STRICT") + pa("w", "PERMISSIVE", selector={"app": "b"}), "PERMISSIVE"),
    (pa("ns", "STRICT") + pa("w", "UNSET", selector={"app": "b"}), "STRICT"),
    (pa("w", "STRICT", selector={"app": "other"}), "PERMISSIVE"),
    (pa("elsewhere", "STRICT", namespace="other"), "PERMISSIVE"),
    (pa("w", "STRICT", selector={"app": "b"}, ports={8080: {"mode": "DISABLE"}}), "plaintext"),
    (pa("w", "DISABLE", selector={"app": "b"}, ports={9999: {"mode": "STRICT"}}), "plaintext"),
])
def test_peer_authentication_sets_the_inbound_mode(yaml_text: str, expected: str) -> None:
    assert mode_of(inbound(view(yaml_text))) == expected


def test_a_sidecar_without_a_certificate_stays_plaintext() -> None:
    assert mode_of(inbound(view(pa("ns", "STRICT")), mtls=False)) == "plaintext"


def test_the_inbound_transport_uses_the_workload_identity() -> None:
    cfg = inbound(view(pa("ns", "STRICT")))
    tls = cfg.transport.tls
    assert (tls.files.cert_chain, tls.files.key, tls.files.bundle) == ("", "", "")
    assert tls.require_peer_cert


# -- authorization ----------------------------------------------------------------------------

class _Down:
    def __init__(self, peer, ip) -> None:
        self.peer_identity = peer
        self.ip = ip
        self.transport = None

    def peer_ip(self):
        return self.ip


class _Mgr:
    def __init__(self) -> None:
        self.counters: dict = {}
        self.stats = self
        self.events = None

    def count(self, name, n=1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


class Ex:
    def __init__(self, peer=None, *, method=b"GET", path=b"/", headers=(), ip=b"10.1.2.3",
                 host=b"b") -> None:
        self.request = Request(method, path, False, list(headers), host, True, False, -1,
                               None, False)
        self.down = _Down(peer, ip)
        self.mgr = _Mgr()
        self.filter_state = None
        self.route = None
        self.denied = False

    def local_reply(self, reason, status=0) -> None:
        self.denied = True


def allowed(cfg, ex: Ex) -> bool:
    chain = filters.build_chain(cfg.http_filters)
    for f in chain:
        if f.__class__.__name__ != "RbacFilter":
            continue
        if not f.on_request(ex):
            return False
    return True


def ap(name: str, action: str, rules: str, *, namespace: str = "shop",
       selector: str = "{matchLabels: {app: b}}") -> str:
    return f"""
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {selector}
  action: {action}
  rules: {rules}
"""


CASES = [
    # (policies, request, allowed?)
    (ap("allow-a", "ALLOW", '[{from: [{source: {principals: ["cluster.local/ns/shop/sa/a"]}}]}]'),
     Ex(SHOP_A), True),
    (ap("allow-a", "ALLOW", '[{from: [{source: {principals: ["cluster.local/ns/shop/sa/a"]}}]}]'),
     Ex(SHOP_C), False),
    (ap("allow-a", "ALLOW", '[{from: [{source: {principals: ["cluster.local/ns/shop/sa/a"]}}]}]'),
     Ex(None), False),
    (ap("allow-ns", "ALLOW", '[{from: [{source: {namespaces: ["shop"]}}]}]'), Ex(SHOP_C), True),
    (ap("allow-ns", "ALLOW", '[{from: [{source: {namespaces: ["shop"]}}]}]'), Ex(OTHER), False),
    (ap("deny-other", "DENY", '[{from: [{source: {notNamespaces: ["shop"]}}]}]'), Ex(OTHER), False),
    (ap("deny-other", "DENY", '[{from: [{source: {notNamespaces: ["shop"]}}]}]'), Ex(SHOP_A), True),
    (ap("ip", "ALLOW", '[{from: [{source: {ipBlocks: ["10.0.0.0/8"]}}]}]'), Ex(ip=b"10.9.9.9"), True),
    (ap("ip", "ALLOW", '[{from: [{source: {ipBlocks: ["10.0.0.0/8"]}}]}]'), Ex(ip=b"11.0.0.1"), False),
    (ap("no-ip", "DENY", '[{from: [{source: {notIpBlocks: ["10.0.0.0/8"]}}]}]'), Ex(ip=b"11.0.0.1"), False),
    (ap("get", "ALLOW", '[{to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]}]'),
     Ex(path=b"/api/x?q=1"), True),
    (ap("get", "ALLOW", '[{to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]}]'),
     Ex(method=b"POST", path=b"/api/x"), False),
    (ap("get", "ALLOW", '[{to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]}]'),
     Ex(path=b"/admin"), False),
    (ap("no-admin", "DENY", '[{to: [{operation: {paths: ["/admin", "*.secret"]}}]}]'),
     Ex(path=b"/x/key.secret"), False),
    (ap("no-admin", "DENY", '[{to: [{operation: {notPaths: ["/public*"]}}]}]'),
     Ex(path=b"/public/a"), True),
    (ap("port", "ALLOW", '[{to: [{operation: {ports: ["8080"]}}]}]'), Ex(), True),
    (ap("port", "ALLOW", '[{to: [{operation: {ports: ["9090"]}}]}]'), Ex(), False),
    (ap("port", "ALLOW", '[{to: [{operation: {notPorts: ["8080"]}}]}]'), Ex(), False),
    (ap("hdr", "ALLOW", '[{when: [{key: "request.headers[x-team]", values: ["blue*"]}]}]'),
     Ex(headers=[(b"x-team", b"blue-1")]), True),
    (ap("hdr", "ALLOW", '[{when: [{key: "request.headers[x-team]", values: ["blue*"]}]}]'),
     Ex(headers=[(b"x-team", b"red")]), False),
    (ap("hdr", "DENY", '[{when: [{key: "request.headers[x-team]", notValues: ["*"]}]}]'),
     Ex(), False),
    (ap("when-ns", "ALLOW", '[{when: [{key: source.namespace, values: ["other"]}]}]'),
     Ex(OTHER), True),
    (ap("when-principal", "ALLOW", '[{when: [{key: source.principal, values: ["*/sa/a"]}]}]'),
     Ex(SHOP_A), True),
    (ap("when-ip", "ALLOW", '[{when: [{key: source.ip, values: ["10.1.2.3"]}]}]'), Ex(), True),
    (ap("allow-all", "ALLOW", "[{}]"), Ex(None), True),
    (ap("allow-nothing", "ALLOW", "[]"), Ex(SHOP_A), False),
    (ap("deny-nothing", "DENY", "[]"), Ex(SHOP_A), True),
    (ap("audit", "AUDIT", "[{}]"), Ex(None), True),
    # DENY wins over ALLOW; with ALLOW policies, one must match
    (ap("allow-all", "ALLOW", "[{}]") + ap("deny-a", "DENY",
     '[{from: [{source: {principals: ["*/sa/a"]}}]}]'), Ex(SHOP_A), False),
    (ap("allow-a", "ALLOW", '[{from: [{source: {principals: ["*/sa/a"]}}]}]')
     + ap("allow-get", "ALLOW", '[{to: [{operation: {methods: ["GET"]}}]}]'), Ex(SHOP_C), True),
    # scope: another workload's, another namespace's, or the mesh root's policy
    (ap("for-c", "ALLOW", "[]", selector="{matchLabels: {app: c}}"), Ex(SHOP_A), True),
    (ap("other-ns", "ALLOW", "[]", namespace="other", selector="{}"), Ex(SHOP_A), True),
    (ap("ns-wide", "ALLOW", "[]", selector="{}"), Ex(SHOP_A), False),
    (ap("mesh", "DENY", '[{from: [{source: {namespaces: ["other"]}}]}]', namespace="istio-system",
        selector="{}"), Ex(OTHER), False),
]


@pytest.mark.parametrize("policies, ex, expected", CASES)
def test_authorization_policy_verdicts(policies: str, ex: Ex, expected: bool) -> None:
    assert allowed(inbound(view(policies)), ex) is expected


def test_audit_logs_the_matching_policy() -> None:
    ex = Ex()
    assert allowed(inbound(view(ap("audit", "AUDIT", "[{}]"))), ex)
    assert ex.filter_state == {"envoy.filters.http.rbac": "ns[shop]-policy[audit]-rule[0]"}


def test_filters_come_first_in_istio_order() -> None:
    cfg = inbound(view(ap("a", "AUDIT", "[{}]") + ap("b", "ALLOW", "[{}]")
                       + ap("c", "DENY", "[{}]")))
    rbac = [c.rules.action.name for n, c in cfg.http_filters if n == security.RBAC_FILTER]
    assert rbac == ["DENY", "ALLOW", "LOG"]
    assert cfg.http_filters[0][0] == security.RBAC_FILTER


# -- auto mTLS --------------------------------------------------------------------------------

def outbound(v: FakeMeshView, *, mtls: bool) -> dict[str, bool]:
    """Endpoint address → whether the caller will use TLS to it."""
    proxy = ProxyInfo.from_metadata("a-1", {"app": "a", "mtls": mtls, "namespace": "shop",
                                            "dependencies": ["b"]})
    out = translate(v, proxy)
    name = "outbound|15006||b"
    cla = out[ENDPOINT][name]
    cluster = compile_cluster(out[CLUSTER][name], {name: cla}, path="c")
    assert compile_endpoints(cla, "e")  # the marks do not upset EDS
    return {ep.host: ep.tls is not None for ep in cluster.endpoints}


def test_auto_mtls_to_endpoints_that_hold_a_certificate() -> None:
    assert outbound(view(), mtls=True) == {"127.0.0.1": True, "127.0.0.2": False}
    assert outbound(view(), mtls=False) == {"127.0.0.1": False, "127.0.0.2": False}
    disabled = pa("w", "DISABLE", selector={"app": "b"})
    assert outbound(view(disabled), mtls=True) == {"127.0.0.1": False, "127.0.0.2": False}


# -- secure naming --------------------------------------------------------------------------------

SHOP_B = "spiffe://cluster.local/ns/shop/sa/b"
SHOP_B2 = "spiffe://cluster.local/ns/shop/sa/b-canary"


def named_view(yaml_text: str = "") -> FakeMeshView:
    """b behind three endpoints: two registered by workloads (their SPIFFE IDs recorded),
    one by a caller the registry could not authenticate, which only its label marks."""
    v = FakeMeshView()
    v.register("b", "127.0.0.1", 15006, spiffe_id=SHOP_B, version="v1")
    v.register("b", "127.0.0.2", 15006, spiffe_id=SHOP_B2, version="v2")
    v.register("b", "127.0.0.3", 15006, **{TLS_LABEL: "true", NAMESPACE_LABEL: "shop"})
    if yaml_text:
        v.apply_yaml(yaml_text)
    return v


def caller_config(v: FakeMeshView, subset: str = "", *,
                  endpoints_from: FakeMeshView | None = None):
    """(the compiled cluster b[/subset] of a caller with a certificate, its raw Cluster).
    `endpoints_from`: take EDS from another view (a caller whose CDS and EDS disagree)."""
    proxy = ProxyInfo.from_metadata("a-1", {"app": "a", "mtls": True, "namespace": "shop",
                                            "dependencies": ["b"]})
    name = f"outbound|15006|{subset}|b"
    out = translate(v, proxy)
    cla = translate(endpoints_from or v, proxy)[ENDPOINT][name]
    return compile_cluster(out[CLUSTER][name], {name: cla}, path="c"), out[CLUSTER][name]


def names_by_host(cluster) -> dict[str, list[bytes] | None]:
    """Endpoint address → the exact names its server must present (None: plaintext)."""
    return {ep.host: None if ep.tls is None else [m.exact for m in ep.tls.peer_names]
            for ep in cluster.endpoints}


def test_each_endpoint_must_present_the_identity_that_registered_it() -> None:
    cluster, raw = caller_config(named_view())
    assert names_by_host(cluster) == {"127.0.0.1": [SHOP_B.encode()],
                                      "127.0.0.2": [SHOP_B2.encode()],
                                      "127.0.0.3": []}  # unauthenticated: any mesh certificate
    sans = [tls_pb2.UpstreamTlsContext() for _ in raw.transport_socket_matches]
    for ctx, entry in zip(sans, raw.transport_socket_matches):
        entry.transport_socket.typed_config.Unpack(ctx)
    typed = [[(m.san_type, m.matcher.exact) for m in ctx.common_tls_context
              .combined_validation_context.default_validation_context
              .match_typed_subject_alt_names] for ctx in sans]
    uri = common_pb2.SubjectAltNameMatcher.URI
    assert typed == [[(uri, SHOP_B)], [(uri, SHOP_B2)], []]
    by_host = {ep.host: ep.tls for ep in cluster.endpoints}
    assert name_accepted(by_host["127.0.0.1"].peer_names, SHOP_B)
    assert not name_accepted(by_host["127.0.0.1"].peer_names, SHOP_B2)
    assert not name_accepted(by_host["127.0.0.1"].peer_names, SHOP_A)


def test_a_subset_names_only_the_identities_behind_it() -> None:
    rule = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: shop}
spec:
  host: b
  subsets: [{name: v1, labels: {version: v1}}]
"""
    cluster, raw = caller_config(named_view(rule), "v1")
    assert names_by_host(cluster) == {"127.0.0.1": [SHOP_B.encode()]}
    assert [e.name for e in raw.transport_socket_matches] == [f"tlsMode-plait-{SHOP_B}",
                                                              "tlsMode-plait"]


def test_an_endpoint_whose_entry_has_not_arrived_is_held_to_the_cluster_identities() -> None:
    v = FakeMeshView()
    v.register("b", "127.0.0.1", 15006, spiffe_id=SHOP_B)
    newer = FakeMeshView()  # EDS already has a second workload that CDS does not name yet
    newer.register("b", "127.0.0.1", 15006, spiffe_id=SHOP_B)
    newer.register("b", "127.0.0.2", 15006, spiffe_id=SHOP_B2)
    cluster, _ = caller_config(v, endpoints_from=newer)
    assert names_by_host(cluster) == {"127.0.0.1": [SHOP_B.encode()],
                                      "127.0.0.2": [SHOP_B.encode()]}  # TLS, and refused


def test_no_identity_without_authentication_and_none_under_disable() -> None:
    v = named_view(pa("w", "DISABLE", selector={"version": "v2"}))
    cluster, _ = caller_config(v)
    assert names_by_host(cluster)["127.0.0.2"] is None  # its workload says DISABLE
    plain = FakeMeshView()
    plain.register("b", "127.0.0.1", 15006, spiffe_id="")
    assert names_by_host(caller_config(plain)[0]) == {"127.0.0.1": None}
    bad = FakeMeshView()  # never stored by the registry; not trusted if it were
    bad.register("b", "127.0.0.1", 15006, spiffe_id="cluster.local/ns/shop/sa/b")
    assert names_by_host(caller_config(bad)[0]) == {"127.0.0.1": None}
