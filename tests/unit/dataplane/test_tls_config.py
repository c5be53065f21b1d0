"""TLS shapes in xDS: what compiles, and what is refused with the field's path."""

from __future__ import annotations

import copy

import pytest

from plait.core.errors import ConfigError
from plait.dataplane.bootstrap import parse_bootstrap
from plait.testing import mtls
from plait.testing import sidecar as sc

SR = "static_resources"


def doc(listener: dict | None = None, cluster: dict | None = None) -> dict:
    lis = listener or sc.listener("in", [sc.virtual_host("all", ["*"], [sc.route("app")])])
    return sc.bootstrap(listeners=[lis], clusters=[cluster or sc.cluster("app", [8080])])


def plain_listener() -> dict:
    return sc.listener("in", [sc.virtual_host("all", ["*"], [sc.route("app")])])


def test_sds_names_mean_the_workload_identity() -> None:
    snap = parse_bootstrap(doc(mtls.permissive(plain_listener(), mtls.downstream_tls()))).snapshot
    transport = snap.listeners[0].transport
    assert transport.permissive and transport.tls.require_peer_cert
    assert transport.tls.files.cert_chain == "" and transport.tls.files.bundle == ""


def test_plaintext_listeners_and_clusters_stay_plaintext() -> None:
    snap = parse_bootstrap(doc()).snapshot
    assert snap.listeners[0].transport is None
    assert all(ep.tls is None for ep in snap.clusters["app"].endpoints)


def _inline_key(d: dict) -> None:
    ctx = d[SR]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    ctx["tls_certificates"] = [{"certificate_chain": {"filename": "/c"},
                                "private_key": {"inline_string": "KEY"}}]
    ctx.pop("tls_certificate_sds_secret_configs")


def _sds_name(d: dict) -> None:
    ctx = d[SR]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    ctx["tls_certificate_sds_secret_configs"][0]["name"] = "file-cert"


def _dns_san(d: dict) -> None:
    ctx = d[SR]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    ctx["combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"] = [{"san_type": "DNS", "matcher": {"exact": "b"}}]


def _two_plain_chains(d: dict) -> None:
    lis = d[SR]["listeners"][0]
    lis["filter_chains"].append(copy.deepcopy(lis["filter_chains"][0]))
    lis["filter_chains"][0]["transport_socket"] = mtls.downstream_tls()
    lis["listener_filters"] = [mtls.INSPECTOR]


def _no_inspector(d: dict) -> None:
    d[SR]["listeners"][0] = mtls.permissive(d[SR]["listeners"][0], mtls.downstream_tls())
    d[SR]["listeners"][0].pop("listener_filters")


def _chains_differ(d: dict) -> None:
    lis = d[SR]["listeners"][0] = mtls.permissive(d[SR]["listeners"][0], mtls.downstream_tls())
    lis["filter_chains"][1]["filters"] = copy.deepcopy(lis["filter_chains"][1]["filters"])
    lis["filter_chains"][1]["filters"][0]["typed_config"]["stat_prefix"] = "other"


def _server_names(d: dict) -> None:
    d[SR]["listeners"][0]["filter_chains"][0]["filter_chain_match"] = {"server_names": ["x"]}


@pytest.mark.parametrize("edit, path", [
    (_inline_key, f"{SR}.clusters[0].transport_socket.typed_config.common_tls_context"
                  ".tls_certificates[0].private_key"),
    (_sds_name, f"{SR}.clusters[0].transport_socket.typed_config.common_tls_context"
                ".tls_certificate_sds_secret_configs[0].name"),
    (_dns_san, f"{SR}.clusters[0].transport_socket.typed_config.common_tls_context"
               ".validation_context.match_typed_subject_alt_names[0].san_type"),
    (_two_plain_chains, f"{SR}.listeners[0].filter_chains[1].filter_chain_match"
                        ".transport_protocol"),
    (_no_inspector, f"{SR}.listeners[0].listener_filters"),
    (_chains_differ, f"{SR}.listeners[0].filter_chains"),
    (_server_names, f"{SR}.listeners[0].filter_chains[0].filter_chain_match.server_names"),
])
def test_refused_with_the_field_path(edit, path: str) -> None:
    cluster = sc.cluster("app", [8080])
    cluster["transport_socket"] = mtls.upstream_tls()
    d = doc(plain_listener(), cluster)
    edit(d)
    with pytest.raises(ConfigError) as err:
        parse_bootstrap(d)
    assert err.value.path == path, err.value
