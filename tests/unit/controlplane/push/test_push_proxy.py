"""ProxyInfo: a proxy's identity read from its xDS node, with defaults and clear errors."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2

from plait.controlplane.push.proxy import ProxyInfo
from plait.core.errors import ConfigError


def node(**metadata) -> base_pb2.Node:
    found = base_pb2.Node(id="web-1")
    if metadata:
        found.metadata.update(metadata)
    return found


def test_a_bare_node_gets_the_defaults():
    proxy = ProxyInfo.from_node(base_pb2.Node(id="web-1"))
    assert proxy == ProxyInfo(node_id="web-1")
    assert (proxy.outbound_port, proxy.inbound_port, proxy.app_port) == (15001, 15006, None)
    assert proxy.calls_everything and proxy.depends_on("anything")


def test_metadata_fields_are_read_and_numbers_become_ints():
    proxy = ProxyInfo.from_node(node(app="web", dependencies=["b", "a", "a"],
                                     outbound_port=16001, inbound_port=16006, app_port=8080,
                                     labels={"version": "v2"}))
    assert proxy.app == "web"
    assert proxy.dependencies == ("a", "b")
    assert (proxy.outbound_port, proxy.inbound_port, proxy.app_port) == (16001, 16006, 8080)
    assert isinstance(proxy.app_port, int)
    assert proxy.labels == (("version", "v2"),)
    assert proxy.depends_on("a") and not proxy.depends_on("c")


@pytest.mark.parametrize(("metadata", "path"), [
    ({"outbound_port": "http"}, "node.metadata.outbound_port"),
    ({"app_port": 70000}, "node.metadata.app_port"),
    ({"inbound_port": 80.5}, "node.metadata.inbound_port"),
    ({"dependencies": "reviews"}, "node.metadata.dependencies"),
    ({"labels": {"version": 2}}, "node.metadata.labels"),
    ({"app": ["web"]}, "node.metadata.app"),
])
def test_bad_metadata_is_rejected_naming_the_key(metadata, path):
    with pytest.raises(ConfigError) as caught:
        ProxyInfo.from_node(node(**metadata))
    assert caught.value.path == path
