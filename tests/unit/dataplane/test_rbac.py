"""The RBAC filter: Envoy's config compiled once, evaluated per request, with Istio's order
(DENY filter, then ALLOW filter) giving the verdicts an AuthorizationPolicy promises."""

from __future__ import annotations

import pytest
from envoy.extensions.filters.http.rbac.v3.rbac_pb2 import RBAC
from google.protobuf import json_format

from plait.codec.http1 import Request
from plait.core.errors import ConfigError, Reason
from plait.dataplane.filters import rbac

ALICE = "spiffe://cluster.local/ns/shop/sa/alice"
MALLORY = "spiffe://cluster.local/ns/evil/sa/mallory"


class _Transport:
    def __init__(self, port: int) -> None:
        self.port = port

    def get_extra_info(self, name):
        return ("127.0.0.1", self.port) if name == "sockname" else None


class _Down:
    def __init__(self, peer, ip: bytes, port: int) -> None:
        self.peer_identity = peer
        self.ip = ip
        self.transport = _Transport(port)

    def peer_ip(self):
        return self.ip


class _Stats:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


class _Events:
    def __init__(self) -> None:
        self.seen = []

    def count(self, type, *, rule, service, now) -> None:
        self.seen.append((type, rule))


class _Mgr:
    def __init__(self) -> None:
        self.stats = _Stats()
        self.events = _Events()


class Ex:
    """Just what the filter reads of an exchange."""

    def __init__(self, *, peer=None, method=b"GET", path=b"/", headers=(), ip=b"10.0.0.5",
                 port=15006) -> None:
        self.request = Request(method, path, False, list(headers), b"svc", True, False, -1,
                               None, False)
        self.down = _Down(peer, ip, port)
        self.mgr = _Mgr()
        self.filter_state = None
        self.replied = None

    def local_reply(self, reason) -> None:
        self.replied = reason


def config(doc: dict) -> rbac.RbacConfig:
    return rbac.compile_config(json_format.ParseDict(doc, RBAC()), "rbac")


def rules(action: str, **policies) -> dict:
    return {"rules": {"action": action, "policies": policies}}


def chain(*docs: dict) -> list[rbac.RbacFilter]:
    return [rbac.RbacFilter(config(d)) for d in docs]


def verdict(filters, ex: Ex) -> bool:
    """True when every filter lets the request through (as the chain runs them)."""
    return all(f.on_request(ex) for f in filters)


PRINCIPAL_ALICE = {"authenticated": {"principal_name": {"exact": ALICE}}}
GET_ONLY = {"header": {"name": ":method", "string_match": {"exact": "GET"}}}


def test_allow_needs_a_match_and_deny_refuses_one() -> None:
    allow = chain(rules("ALLOW", alice={"permissions": [{"any": True}],
                                        "principals": [PRINCIPAL_ALICE]}))
    assert verdict(allow, Ex(peer=ALICE))
    refused = Ex(peer=MALLORY)
    assert not verdict(allow, refused)
    assert refused.replied is Reason.DENIED
    assert refused.mgr.stats.counters == {"rbac_denied_total": 1}
    assert refused.mgr.events.seen == [("denied", "no matching ALLOW policy")]
    assert not verdict(allow, Ex(peer=None)), "plaintext has no principal"

    deny = chain(rules("DENY", mallory={"permissions": [{"any": True}], "principals": [
        {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/evil/.*"}}}}]}))
    assert verdict(deny, Ex(peer=ALICE))
    assert verdict(deny, Ex(peer=None))
    ex = Ex(peer=MALLORY)
    assert not verdict(deny, ex)
    assert ex.filter_state == {rbac.NAME: "mallory"}


def test_istio_order_deny_wins_over_allow() -> None:
    deny_post = rules("DENY", no_post={"permissions": [
        {"header": {"name": ":method", "string_match": {"exact": "POST"}}}],
        "principals": [{"any": True}]})
    allow_alice = rules("ALLOW", alice={"permissions": [{"any": True}],
                                        "principals": [PRINCIPAL_ALICE]})
    filters = chain(deny_post, allow_alice)
    assert verdict(filters, Ex(peer=ALICE, method=b"GET"))
    assert not verdict(filters, Ex(peer=ALICE, method=b"POST")), "DENY comes first"
    assert not verdict(filters, Ex(peer=MALLORY, method=b"GET")), "no ALLOW match"


def test_log_never_refuses_but_names_the_policy() -> None:
    (log,) = chain(rules("LOG", audit={"permissions": [GET_ONLY], "principals": [{"any": True}]}))
    ex = Ex()
    assert log.on_request(ex)
    assert ex.filter_state == {rbac.NAME: "audit"}
    assert ex.mgr.stats.counters == {"rbac_logged_total": 1}
    other = Ex(method=b"PUT")
    assert log.on_request(other) and other.filter_state is None


def test_an_allow_filter_without_policies_denies_everything() -> None:
    assert not verdict(chain(rules("ALLOW")), Ex(peer=ALICE))
    assert verdict(chain(rules("DENY")), Ex(peer=ALICE))
    assert verdict(chain({}), Ex(peer=None)), "no rules: nothing enforced"


@pytest.mark.parametrize("permission, ex, expected", [
    ({"url_path": {"path": {"prefix": "/api/"}}}, Ex(path=b"/api/items?x=/admin"), True),
    ({"url_path": {"path": {"exact": "/admin"}}}, Ex(path=b"/admin?x=1"), True),
    ({"url_path": {"path": {"exact": "/admin"}}}, Ex(path=b"/admin/x"), False),
    ({"url_path": {"path": {"suffix": ".json"}}}, Ex(path=b"/a/b.json"), True),
    ({"header": {"name": ":path", "string_match": {"prefix": "/api"}}}, Ex(path=b"/api"), True),
    ({"destination_port": 15006}, Ex(port=15006), True),
    ({"destination_port": 15006}, Ex(port=15007), False),
    ({"destination_port_range": {"start": 8000, "end": 9000}}, Ex(port=8999), True),
    ({"destination_port_range": {"start": 8000, "end": 9000}}, Ex(port=9000), False),
    ({"header": {"name": "x-team", "present_match": True}}, Ex(headers=[(b"x-team", b"a")]), True),
    ({"and_rules": {"rules": [GET_ONLY, {"url_path": {"path": {"prefix": "/r"}}}]}},
     Ex(method=b"GET", path=b"/w"), False),
    ({"or_rules": {"rules": [GET_ONLY, {"url_path": {"path": {"prefix": "/r"}}}]}},
     Ex(method=b"PUT", path=b"/r"), True),
    ({"not_rule": GET_ONLY}, Ex(method=b"GET"), False),
])
def test_permissions(permission: dict, ex: Ex, expected: bool) -> None:
    filters = chain(rules("ALLOW", p={"permissions": [permission], "principals": [{"any": True}]}))
    assert verdict(filters, ex) is expected


@pytest.mark.parametrize("principal, ex, expected", [
    ({"authenticated": {}}, Ex(peer=MALLORY), True),
    ({"authenticated": {}}, Ex(peer=None), False),
    ({"authenticated": {"principal_name": {"prefix": "spiffe://cluster.local/ns/shop/"}}},
     Ex(peer=ALICE), True),
    ({"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}, Ex(ip=b"10.9.8.7"), True),
    ({"remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}, Ex(ip=b"11.0.0.1"), False),
    ({"direct_remote_ip": {"address_prefix": "::1", "prefix_len": 128}}, Ex(ip=b"::1"), True),
    ({"direct_remote_ip": {"address_prefix": "10.0.0.5"}}, Ex(ip=b"10.0.0.5"), True),
    ({"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}, Ex(ip=None), False),
    ({"header": {"name": "x-user", "string_match": {"exact": "bob"}}},
     Ex(headers=[(b"x-user", b"bob")]), True),
    ({"not_id": PRINCIPAL_ALICE}, Ex(peer=ALICE), False),
    ({"and_ids": {"ids": [PRINCIPAL_ALICE, {"direct_remote_ip": {"address_prefix": "10.0.0.0",
                                                                   "prefix_len": 8}}]}},
     Ex(peer=ALICE, ip=b"192.168.0.1"), False),
    ({"or_ids": {"ids": [PRINCIPAL_ALICE, {"any": True}]}}, Ex(peer=None), True),
])
def test_principals(principal: dict, ex: Ex, expected: bool) -> None:
    filters = chain(rules("ALLOW", p={"permissions": [{"any": True}], "principals": [principal]}))
    assert verdict(filters, ex) is expected


def test_shadow_rules_only_count() -> None:
    (f,) = chain({"shadow_rules": {"action": "ALLOW", "policies": {}}})
    ex = Ex()
    assert f.on_request(ex)
    assert ex.mgr.stats.counters == {"rbac_shadow_denied_total": 1}


@pytest.mark.parametrize("doc, where", [
    (rules("ALLOW", p={"permissions": [{"any": True}]}), "rules.policies[p].principals"),
    (rules("ALLOW", p={"principals": [{"any": True}]}), "rules.policies[p].permissions"),
    (rules("ALLOW", p={"permissions": [{"requested_server_name": {"exact": "x"}}],
                       "principals": [{"any": True}]}), "rules.policies[p].permissions[0]"),
    (rules("ALLOW", p={"permissions": [{"any": True}], "principals": [
        {"direct_remote_ip": {"address_prefix": "not-an-ip", "prefix_len": 8}}]}),
     "rules.policies[p].principals[0].direct_remote_ip"),
    (rules("ALLOW", p={"permissions": [{"url_path": {"path": {"safe_regex": {"regex": "("}}}}],
                       "principals": [{"any": True}]}), "rules.policies[p].permissions[0]"),
    (rules("ALLOW", p={"permissions": [{"and_rules": {"rules": []}}],
                       "principals": [{"any": True}]}), "rules.policies[p].permissions[0]"),
])
def test_bad_config_names_the_field(doc: dict, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(doc)
    assert err.value.path.startswith(f"rbac.{where}"), err.value


def test_deep_nesting_is_refused() -> None:
    perm: dict = {"any": True}
    for _ in range(rbac.MAX_DEPTH + 2):
        perm = {"not_rule": perm}
    with pytest.raises(ConfigError, match="nested deeper"):
        config(rules("ALLOW", p={"permissions": [perm], "principals": [{"any": True}]}))


def test_compiled_config_survives_pickling() -> None:
    import pickle

    cfg = config(rules("ALLOW", p={"permissions": [GET_ONLY], "principals": [
        PRINCIPAL_ALICE, {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}]}))
    assert pickle.loads(pickle.dumps(cfg)) == cfg
