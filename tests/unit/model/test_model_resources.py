import pytest
import yaml

from plait.core.errors import ConfigError
from plait.model import (
    DestinationRule,
    ServiceEntry,
    VirtualService,
    parse_duration,
    parse_resource,
    resolve_kind,
    to_dict,
)


def test_virtual_service_attributes(vs):
    r = parse_resource(vs)
    assert isinstance(r, VirtualService)
    assert r.metadata.namespace == "shop"
    canary = r.spec.http[0]
    assert canary.match[0].uri.prefix == "/api/"
    assert canary.match[0].headers["x-user"].exact == "jason"
    assert canary.match[0].without_headers["x-skip"].is_empty
    assert canary.match[0].source_labels == {"app": "productpage"}
    assert [d.weight for d in canary.route] == [75, 25]
    assert canary.route[0].destination.port.number == 9080
    assert canary.route[0].headers.request.set == {"x-canary": "no"}
    assert parse_duration(canary.timeout) == 1.5
    assert canary.retries.attempts == 3 and canary.retries.retry_on == "5xx,connect-failure,503"
    assert canary.fault.delay.percentage.value == 10
    assert canary.fault.abort.http_status == 503
    assert canary.mirror.host == "reviews-shadow" and canary.mirror_percentage.value == 20
    assert canary.rewrite.authority == "reviews.internal"
    assert r.spec.http[1].redirect.redirect_code == 302
    assert r.spec.http[2].direct_response.body.string == "short and stout"
    assert r.spec.http[3].route[0].weight is None


def test_destination_rule_attributes(dr):
    r = parse_resource(dr)
    assert isinstance(r, DestinationRule)
    assert r.metadata.namespace == "default"
    policy = r.spec.traffic_policy
    assert policy.load_balancer.consistent_hash.http_cookie.name == "user"
    assert policy.load_balancer.locality_lb_setting.failover[0].from_ == "us-east"
    assert policy.connection_pool.tcp.max_connections == 100
    assert policy.connection_pool.http.http1_max_pending_requests == 10
    assert policy.outlier_detection.consecutive_5xx_errors == 5
    assert policy.tls.mode == "ISTIO_MUTUAL"
    assert [s.name for s in r.spec.subsets] == ["v1", "v2"]
    assert r.spec.subsets[1].traffic_policy.load_balancer.simple == "ROUND_ROBIN"


def test_service_entry_attributes(se):
    r = parse_resource(se)
    assert isinstance(r, ServiceEntry)
    assert r.spec.ports[1].protocol == "dubbo" and r.spec.ports[1].target_port == 20881
    assert r.spec.endpoints[0].ports == {"postgres": 6432}
    assert r.spec.resolution == "STATIC"


@pytest.mark.parametrize("fixture", ["vs", "dr", "se"])
def test_dump_by_alias_round_trips(fixture, request):
    doc = request.getfixturevalue(fixture)
    r = parse_resource(doc)
    dumped = to_dict(r)
    assert parse_resource(yaml.safe_load(yaml.safe_dump(dumped))) == r
    # Istio's spelling comes back, not the Python attribute names.
    text = yaml.safe_dump(dumped)
    assert "api_version" not in text and "apiVersion" in text


def test_python_names_are_accepted_too(dr):
    dr["spec"]["trafficPolicy"]["outlierDetection"] = {"consecutive_5xx_errors": 2}
    assert parse_resource(dr).spec.traffic_policy.outlier_detection.consecutive_5xx_errors == 2


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_api_versions(vs, version):
    vs["apiVersion"] = f"networking.istio.io/{version}"
    assert parse_resource(vs).api_version == vs["apiVersion"]


def test_kinds_resolve_case_insensitively():
    assert resolve_kind("VS") == "VirtualService"
    assert resolve_kind("destinationrules") == "DestinationRule"
    assert resolve_kind("ServiceEntry") == "ServiceEntry"
    with pytest.raises(ConfigError) as err:
        resolve_kind("gateway")
    assert err.value.path == "kind"


def test_single_destination_needs_no_weight(vs):
    vs["spec"]["http"] = [{"route": [{"destination": {"host": "a"}, "weight": 30}]}]
    parse_resource(vs)


def test_several_destinations_without_weights_are_accepted(vs):
    vs["spec"]["http"] = [{"route": [{"destination": {"host": "a"}}, {"destination": {"host": "b"}}]}]
    parse_resource(vs)


def _set(doc, path, value):
    *parents, last = path
    for p in parents:
        doc = doc[p]
    if value is DELETE:
        del doc[last]
    else:
        doc[last] = value


DELETE = object()
VS_ERRORS = [
    (("spec", "http", 0, "route", 1, "weight"), 35, "spec.http[0].route", "total 110"),
    (("spec", "http", 0, "route", 1, "weight"), 125, "spec.http[0].route[1].weight", "less than or equal to 100"),
    (("spec", "http", 0, "route", 1, "weight"), -5, "spec.http[0].route[1].weight", "greater than or equal to 0"),
    (("spec", "http", 0, "retires"), {}, "spec.http[0].retires", "unknown field"),
    (("spec", "http", 0, "timeout"), "5 seconds", "spec.http[0].timeout", "invalid duration"),
    (("spec", "http", 0, "retries", "perTryTimeout"), "-1s", "spec.http[0].retries.perTryTimeout", "invalid duration"),
    (("spec", "http", 0, "retries", "retryOn"), "5xx,sometimes", "spec.http[0].retries.retryOn", "sometimes"),
    (("spec", "http", 0, "match", 0, "uri"), {"regex": "(unclosed"}, "spec.http[0].match[0].uri.regex", "regex does not compile"),
    # valid in Python's re, refused by RE2 (and so by Envoy and proxyless gRPC)
    (("spec", "http", 0, "match", 0, "uri"), {"regex": "/(a)\\1"}, "spec.http[0].match[0].uri.regex", "RE2"),
    (("spec", "http", 0, "match", 0, "headers", "x-user"), {"regex": "a(?=b)"}, "spec.http[0].match[0].headers['x-user'].regex", "RE2"),
    (("spec", "http", 0, "match", 0, "uri"), {"exact": "/a", "prefix": "/"}, "spec.http[0].match[0].uri", "only one of"),
    (("spec", "http", 0, "match", 0, "uri"), {}, "spec.http[0].match[0].uri", "set one of"),
    (("spec", "http", 0, "match", 0, "headers", "x-user"), {"regex": "["}, "spec.http[0].match[0].headers['x-user'].regex", "regex"),
    (("spec", "http", 0, "match", 0, "port"), 70000, "spec.http[0].match[0].port", "less than or equal to 65535"),
    (("spec", "http", 0, "route", 0, "destination", "port", "number"), 0, "spec.http[0].route[0].destination.port.number", "greater than or equal to 1"),
    (("spec", "http", 0, "route", 0, "destination", "host"), "", "spec.http[0].route[0].destination.host", "host"),
    (("spec", "http", 0, "route", 0, "destination"), DELETE, "spec.http[0].route[0].destination", "required"),
    (("spec", "http", 0, "fault", "delay", "percentage", "value"), 101, "spec.http[0].fault.delay.percentage.value", "less than or equal to 100"),
    (("spec", "http", 0, "fault", "abort", "httpStatus"), DELETE, "spec.http[0].fault.abort", "exactly one of httpStatus, grpcStatus"),
    (("spec", "http", 0, "fault"), {}, "spec.http[0].fault", "delay, abort"),
    (("spec", "http", 0, "mirrorPercentage", "value"), -1, "spec.http[0].mirrorPercentage.value", "greater than or equal to 0"),
    (("spec", "http", 0, "mirror"), DELETE, "spec.http[0].mirrorPercentage", "needs mirror"),
    (("spec", "http", 0, "redirect"), {"uri": "/x"}, "spec.http[0]", "exactly one of route, redirect, directResponse"),
    (("spec", "http", 2, "directResponse", "status"), 99, "spec.http[2].directResponse.status", "greater than or equal to 200"),
    (("spec", "http", 0, "corsPolicy", "maxAge"), "1 day", "spec.http[0].corsPolicy.maxAge", "invalid duration"),
    (("spec", "hosts"), [], "spec.hosts", "at least 1"),
    (("spec", "tcp"), [], "spec.tcp", "unknown field"),
    (("metadata", "name"), "Reviews_V1", "metadata.name", "RFC 1123"),
    (("metadata", "namespace"), "a.b", "metadata.namespace", "RFC 1123"),
    (("metadata",), DELETE, "metadata", "required"),
    (("apiVersion",), "security.istio.io/v1", "apiVersion", "networking.istio.io/v1"),
    (("kind",), "Gateway", "kind", "unknown kind"),
    (("spec",), "hello", "spec", "mapping"),
]


@pytest.mark.parametrize("path, value, where, reason", VS_ERRORS)
def test_virtual_service_errors(vs, path, value, where, reason):
    _set(vs, path, value)
    with pytest.raises(ConfigError) as err:
        parse_resource(vs)
    assert err.value.path == where
    assert reason in err.value.reason


DR_ERRORS = [
    (("spec", "subsets", 1, "name"), "v1", "spec.subsets[1].name", "duplicate subset name 'v1'"),
    (("spec", "trafficPolicy", "loadBalancer", "simple"), "FASTEST", "spec.trafficPolicy.loadBalancer.simple", "ROUND_ROBIN"),
    (("spec", "subsets", 1, "trafficPolicy", "loadBalancer", "consistentHash"), {"useSourceIp": True}, "spec.subsets[1].trafficPolicy.loadBalancer", "only one of simple, consistentHash"),
    (("spec", "trafficPolicy", "loadBalancer", "consistentHash"), {"httpHeaderName": "x", "useSourceIp": True}, "spec.trafficPolicy.loadBalancer.consistentHash", "exactly one"),
    (("spec", "trafficPolicy", "outlierDetection", "maxEjectionPercent"), 150, "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "less than or equal to 100"),
    (("spec", "trafficPolicy", "outlierDetection", "interval"), "often", "spec.trafficPolicy.outlierDetection.interval", "invalid duration"),
    (("spec", "trafficPolicy", "outlierDetection", "consecutiveErrors"), 5, "spec.trafficPolicy.outlierDetection.consecutiveErrors", "unknown field"),
    (("spec", "trafficPolicy", "connectionPool", "tcp", "maxConnections"), -1, "spec.trafficPolicy.connectionPool.tcp.maxConnections", "greater than or equal to 0"),
    (("spec", "trafficPolicy", "connectionPool", "http", "idleTimeout"), 30, "spec.trafficPolicy.connectionPool.http.idleTimeout", "string"),
    (("spec", "trafficPolicy", "tls"), {"mode": "MUTUAL"}, "spec.trafficPolicy.tls", "clientCertificate"),
    (("spec", "trafficPolicy", "portLevelSettings"), [{"port": {"number": 80}}, {"port": {"number": 80}}], "spec.trafficPolicy.portLevelSettings[1].port.number", "already has settings"),
    (("spec", "host"), DELETE, "spec.host", "required"),
]


@pytest.mark.parametrize("path, value, where, reason", DR_ERRORS)
def test_destination_rule_errors(dr, path, value, where, reason):
    _set(dr, path, value)
    with pytest.raises(ConfigError) as err:
        parse_resource(dr)
    assert err.value.path == where
    assert reason in err.value.reason


SE_ERRORS = [
    (("spec", "ports", 1, "number"), 5432, "spec.ports[1].number", "duplicate port number"),
    (("spec", "ports", 1, "name"), "postgres", "spec.ports[1].name", "duplicate port name"),
    (("spec", "ports", 0, "number"), 65536, "spec.ports[0].number", "less than or equal to 65535"),
    (("spec", "ports", 0, "protocol"), "SMTP", "spec.ports[0].protocol", "unknown protocol"),
    (("spec", "addresses"), ["10.0.0.300"], "spec.addresses", "not an IP address"),
    (("spec", "endpoints", 0, "address"), "db.example.com", "spec.endpoints[0].address", "IP address"),
    (("spec", "endpoints", 0, "ports"), {"mysql": 3306}, "spec.endpoints[0].ports.mysql", "no port named"),
    (("spec", "resolution"), "NONE", "spec.endpoints", "STATIC or DNS"),
    (("spec", "resolution"), "MAGIC", "spec.resolution", "STATIC"),
    (("spec", "endpoints"), [], "spec.endpoints", "needs endpoints"),
    (("spec", "location"), "OUTSIDE", "spec.location", "MESH_EXTERNAL"),
]


@pytest.mark.parametrize("path, value, where, reason", SE_ERRORS)
def test_service_entry_errors(se, path, value, where, reason):
    _set(se, path, value)
    with pytest.raises(ConfigError) as err:
        parse_resource(se)
    assert err.value.path == where
    assert reason in err.value.reason


def test_more_problems_are_counted(vs):
    vs["spec"]["bogus"] = 1
    vs["spec"]["other"] = 2
    with pytest.raises(ConfigError) as err:
        parse_resource(vs)
    assert err.value.reason.endswith("(and 1 more problem)")


@pytest.mark.parametrize("doc", [None, [], "text", 3])
def test_not_a_mapping(doc):
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_resource(doc)
