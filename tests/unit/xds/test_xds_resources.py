"""A document protobuf refuses becomes a ConfigError whose path leads to the refused field,
list indices, map keys and `typed_config` included, whatever protobuf's own text says."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2

from plait.core.errors import ConfigError
from plait.xds.resources import HCM, parse

ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def cluster() -> dict:
    return {
        "name": "api", "connect_timeout": "0.25s", "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": "api", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": 8080}}}},
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.2",
                                                         "port_value": 8081}}}},
        ]}]},
    }


def listener() -> dict:
    vhost = {"name": "all", "domains": ["*"],
             "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "api"}}]}
    hcm = {"@type": HCM, "stat_prefix": "out", "route_config": {"virtual_hosts": [vhost]},
           "http_filters": [{"name": "envoy.filters.http.router",
                             "typed_config": {"@type": ROUTER}}]}
    return {"name": "out",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15001}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def refusal(document: dict, message, root: str = "") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(document, message, root=root)
    return info.value


def endpoint(doc: dict, i: int) -> dict:
    return doc["load_assignment"]["endpoints"][0]["lb_endpoints"][i]["endpoint"]


def hcm_of(doc: dict) -> dict:
    return doc["filter_chains"][0]["filters"][0]["typed_config"]


def test_good_documents_parse():
    assert parse(cluster(), cluster_pb2.Cluster()).name == "api"
    assert parse(listener(), listener_pb2.Listener()).filter_chains[0].filters[0].typed_config


def test_an_unknown_field_is_named_under_its_index():
    doc = cluster()
    endpoint(doc, 1)["address"]["socket_address"]["colour"] = "blue"
    err = refusal(doc, cluster_pb2.Cluster())
    assert err.path == ("load_assignment.endpoints[0].lb_endpoints[1].endpoint.address"
                        ".socket_address.colour")
    assert err.reason == "unknown field 'colour'"


@pytest.mark.parametrize("value,words", [
    ("eighty", "eighty"), (1.5, "1.5"), (True, "Bool"), (2**40, "out of range"), ([80], "list"),
])
def test_a_wrong_type_in_a_list_element_names_the_element(value, words):
    doc = cluster()
    endpoint(doc, 1)["address"]["socket_address"]["port_value"] = value
    err = refusal(doc, cluster_pb2.Cluster(), root="static_resources.clusters[3]")
    assert err.path == ("static_resources.clusters[3].load_assignment.endpoints[0]"
                        ".lb_endpoints[1].endpoint.address.socket_address.port_value")
    assert words in err.reason and " at " not in err.reason


def test_a_bad_scalar_inside_a_list_of_scalars_names_its_index():
    doc = listener()
    hcm_of(doc)["route_config"]["virtual_hosts"][0]["domains"] = ["a", "b", 5]
    err = refusal(doc, listener_pb2.Listener())
    assert err.path == ("filter_chains[0].filters[0].typed_config.route_config"
                        ".virtual_hosts[0].domains[2]")


def test_errors_inside_typed_config_are_followed_into_the_named_type():
    doc = listener()
    hcm_of(doc)["route_config"]["virtual_hosts"][0]["routes"][0]["match"]["prefix"] = 7
    err = refusal(doc, listener_pb2.Listener())
    assert err.path == ("filter_chains[0].filters[0].typed_config.route_config"
                        ".virtual_hosts[0].routes[0].match.prefix")
    doc = listener()
    hcm_of(doc)["http_filters"][0]["typed_config"]["dynamic_stats"] = "maybe"
    err = refusal(doc, listener_pb2.Listener())
    assert err.path == ("filter_chains[0].filters[0].typed_config.http_filters[0]"
                        ".typed_config.dynamic_stats")


def test_an_unknown_or_missing_type_url_is_the_typed_config_itself():
    doc = listener()
    doc["filter_chains"][0]["filters"][0]["typed_config"] = {"@type": "type.googleapis.com/x.Y"}
    err = refusal(doc, listener_pb2.Listener())
    assert err.path == "filter_chains[0].filters[0].typed_config"
    assert "x.Y" in err.reason
    doc = listener()
    del hcm_of(doc)["@type"]
    assert refusal(doc, listener_pb2.Listener()).path == "filter_chains[0].filters[0].typed_config"


@pytest.mark.parametrize("type_url, kind", [(None, "null"), (7, "a number"), ([], "a list")])
def test_a_type_url_that_is_not_a_string_is_refused_where_it_is(type_url, kind):
    # protobuf's own parser fails on these with AttributeError, not its ParseError
    doc = listener()
    hcm_of(doc)["@type"] = type_url
    err = refusal(doc, listener_pb2.Listener())
    assert err.path == "filter_chains[0].filters[0].typed_config['@type']"
    assert err.reason == f"expected a type URL string, got {kind}"


def test_map_entries_are_named_by_key():
    doc = listener()
    hcm_of(doc)["route_config"]["virtual_hosts"][0]["typed_per_filter_config"] = {
        "envoy.filters.http.router": {"@type": ROUTER, "suppress_envoy_headers": "no"}}
    err = refusal(doc, listener_pb2.Listener())
    assert err.path == ("filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0]"
                        ".typed_per_filter_config['envoy.filters.http.router']"
                        ".suppress_envoy_headers")


def test_a_well_known_type_is_refused_as_a_whole():
    doc = cluster()
    doc["connect_timeout"] = "soon"
    err = refusal(doc, cluster_pb2.Cluster())
    assert err.path == "connect_timeout" and "soon" in err.reason


def test_a_list_element_that_is_not_a_mapping():
    doc = cluster()
    doc["load_assignment"]["endpoints"][0]["lb_endpoints"][1] = "127.0.0.2:8081"
    err = refusal(doc, cluster_pb2.Cluster())
    assert err.path == "load_assignment.endpoints[0].lb_endpoints[1]"
    assert err.reason == "expected a mapping (LbEndpoint), got a string"


def test_the_first_refused_field_in_document_order_is_named():
    doc = cluster()
    doc["lb_policy"] = "MAGLEVISH"
    endpoint(doc, 0)["address"]["socket_address"]["port_value"] = "x"
    err = refusal(doc, cluster_pb2.Cluster())
    assert err.path == "lb_policy" and "MAGLEVISH" in err.reason


def test_fields_that_clash_name_the_message_that_holds_them():
    doc = listener()
    hcm_of(doc)["route_config"]["virtual_hosts"][0]["routes"][0]["match"]["path"] = "/x"
    err = refusal(doc, listener_pb2.Listener())
    assert err.path == ("filter_chains[0].filters[0].typed_config.route_config"
                        ".virtual_hosts[0].routes[0].match")
    assert "path_specifier" in err.reason


def test_odd_keys_are_quoted():
    doc = cluster()
    doc["load_assignment"]["no such key"] = 1
    assert refusal(doc, cluster_pb2.Cluster()).path == "load_assignment['no such key']"
