"""PeerAuthentication and AuthorizationPolicy: Istio's YAML accepted as written, dumped back
the same, and refused with the field path where Plait cannot honour it."""

from __future__ import annotations

import pytest

from plait.core.errors import ConfigError
from plait.model import parse_documents, parse_resource, resolve_kind, to_dict

PA = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: PERMISSIVE}
"""

AP = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewers, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/productpage", "*/sa/admin"]
        notNamespaces: ["test"]
        ipBlocks: ["10.0.0.0/8", "192.168.1.7"]
    to:
    - operation: {methods: ["GET", "HEAD"], paths: ["/api/*", "*.json", "/exact"], ports: [9080, "9443"]}
    when:
    - key: request.headers[x-team]
      values: ["blue", "gr*"]
    - key: source.ip
      notValues: ["10.1.0.0/16"]
"""


def test_both_kinds_parse_and_round_trip() -> None:
    for text in (PA, AP):
        (resource,) = parse_documents(text)
        assert parse_resource(to_dict(resource)) == resource
    (ap,) = parse_documents(AP)
    assert ap.spec.rules[0].from_[0].source.principals[1] == "*/sa/admin"
    assert ap.spec.rules[0].to[0].operation.ports == ["9080", "9443"]
    (pa,) = parse_documents(PA)
    assert pa.spec.port_level_mtls[8080].mode == "PERMISSIVE"


def test_short_names() -> None:
    assert resolve_kind("pa") == "PeerAuthentication"
    assert resolve_kind("authorizationpolicies") == "AuthorizationPolicy"
    assert resolve_kind("ap") == "AuthorizationPolicy"


def _bad(kind: str, spec: dict) -> ConfigError:
    doc = {"apiVersion": "security.istio.io/v1", "kind": kind,
           "metadata": {"name": "x"}, "spec": spec}
    with pytest.raises(ConfigError) as err:
        parse_resource(doc)
    return err.value


@pytest.mark.parametrize("kind, spec, path", [
    ("PeerAuthentication", {"mtls": {"mode": "LOOSE"}}, "spec.mtls.mode"),
    ("PeerAuthentication", {"portLevelMtls": {8080: {"mode": "DISABLE"}}}, "spec.portLevelMtls"),
    ("PeerAuthentication", {"portLevelMtls": {0: {"mode": "DISABLE"}},
                            "selector": {"matchLabels": {"a": "b"}}}, "spec.portLevelMtls"),
    ("AuthorizationPolicy", {"action": "CUSTOM"}, "spec.action"),
    ("AuthorizationPolicy", {"rules": [{"to": [{"operation": {"paths": ["/a*b"]}}]}]},
     "spec.rules[0].to[0].operation.paths[0]"),
    ("AuthorizationPolicy", {"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]},
     "spec.rules[0].to[0].operation.ports[0]"),
    ("AuthorizationPolicy", {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]},
     "spec.rules[0].from[0].source.ipBlocks[0]"),
    ("AuthorizationPolicy", {"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]},
     "spec.rules[0].from[0].source.requestPrincipals"),
    ("AuthorizationPolicy", {"rules": [{"when": [{"key": "request.auth.claims[iss]",
                                                  "values": ["x"]}]}]},
     "spec.rules[0].when[0].key"),
    ("AuthorizationPolicy", {"rules": [{"when": [{"key": "source.ip"}]}]}, "spec.rules[0].when[0]"),
    ("AuthorizationPolicy", {"rules": [{"when": [{"key": "destination.port",
                                                  "values": ["99999"]}]}]},
     "spec.rules[0].when[0].values[0]"),
])
def test_refused_with_the_field_path(kind: str, spec: dict, path: str) -> None:
    assert _bad(kind, spec).path.startswith(path)
