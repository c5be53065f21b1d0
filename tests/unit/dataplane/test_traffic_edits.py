"""What the router does to a request or answers in its place: header edits, regex rewrites,
redirect locations, and the `-shadow` authority of a mirrored request."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from plait.core.errors import ConfigError
from plait.dataplane.bootstrap import parse_bootstrap
from plait.dataplane.config import HeaderEdit, Redirect
from plait.dataplane.http.exchange import Exchange, _regex_rewrite
from plait.dataplane.http.mirror import shadow_head
from plait.testing import sidecar as sc

# -- HeaderEdit.apply ------------------------------------------------------------------------

HEADERS = [(b"host", b"svc"), (b"x-a", b"1"), (b"x-a", b"2"), (b"x-b", b"b"),
           (b"accept", b"*/*")]


def test_append_keeps_existing_values_and_adds_after_them():
    edit = HeaderEdit(add=((b"x-a", b"3", True),))
    assert edit.apply(HEADERS) == HEADERS + [(b"x-a", b"3")]


def test_overwrite_replaces_every_existing_value():
    edit = HeaderEdit(add=((b"x-a", b"new", False),))
    out = edit.apply(HEADERS)
    assert [v for n, v in out if n == b"x-a"] == [b"new"]
    assert [h for h in out if h[0] != b"x-a"] == [h for h in HEADERS if h[0] != b"x-a"]


def test_overwrite_of_an_absent_header_adds_it():
    assert HeaderEdit(add=((b"x-new", b"v", False),)).apply(HEADERS) == HEADERS + [
        (b"x-new", b"v")]


def test_remove_drops_every_value_and_leaves_the_rest_in_order():
    edit = HeaderEdit(remove=frozenset({b"x-a", b"x-missing"}))
    assert edit.apply(HEADERS) == [(b"host", b"svc"), (b"x-b", b"b"), (b"accept", b"*/*")]


def test_remove_comes_before_add():
    edit = HeaderEdit(add=((b"x-b", b"added", True),), remove=frozenset({b"x-b"}))
    assert [v for n, v in edit.apply(HEADERS) if n == b"x-b"] == [b"added"]


def test_apply_leaves_its_input_alone():
    before = list(HEADERS)
    HeaderEdit(add=((b"x-a", b"z", False),), remove=frozenset({b"x-b"})).apply(HEADERS)
    HeaderEdit(add=((b"x-c", b"z", True),)).apply(HEADERS)
    assert HEADERS == before


def compiled_routes(routes: list[dict], *, vh_fields: dict | None = None,
                    clusters=("a",)) -> dict:
    vh = {**sc.virtual_host("all", ["*"], routes), **(vh_fields or {})}
    doc = sc.bootstrap(listeners=[sc.listener("l", [vh])],
                       clusters=[sc.cluster(n, [1000 + i]) for i, n in enumerate(clusters)])
    table = parse_bootstrap(json.dumps(doc)).snapshot.listeners[0].route_table
    return {r.name: r for r in table.default.routes}


def test_the_last_overwrite_of_a_header_wins_as_in_envoy():
    # Envoy applies the route's edits, then the virtual host's, each in order: two
    # overwrites of one header leave the later value only, not both.
    r = compiled_routes(
        [sc.route("a", name="r", request_headers_to_add=[
            sc.header_value("x-env", "route", append=False),
            sc.header_value("x-twice", "first", append=False),
            sc.header_value("x-twice", "second", append=False),
            sc.header_value("x-list", "1"),
            sc.header_value("x-list", "2")])],
        vh_fields={"request_headers_to_add": [sc.header_value("x-env", "vhost",
                                                               append=False)]})["r"]
    out = r.request_headers.apply([(b"x-env", b"client"), (b"x-twice", b"client")])
    assert sorted(out) == [(b"x-env", b"vhost"), (b"x-list", b"1"), (b"x-list", b"2"),
                           (b"x-twice", b"second")]


@pytest.mark.parametrize("action", ["ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS"])
def test_append_actions_that_are_not_supported_are_refused(action):
    with pytest.raises(ConfigError) as info:
        compiled_routes([sc.route("a", name="r", request_headers_to_add=[
            sc.header_value("x-ok", "1"),
            sc.header_value("x-h", "v", append_action=action)])])
    assert info.value.path.endswith("routes[0].request_headers_to_add[1].append_action")


# -- regex_rewrite ---------------------------------------------------------------------------

def rewrite(pattern: str, substitution: str, target: bytes) -> bytes:
    r = compiled_routes([sc.route("a", name="r", action={"regex_rewrite": {
        "pattern": {"regex": pattern}, "substitution": substitution}})])["r"]
    return _regex_rewrite(r.regex_rewrite, target)


@pytest.mark.parametrize("pattern,substitution,target,expected", [
    ("^/service/([^/]+)(/.*)$", "\\2/instance/\\1", b"/service/foo/v1/api",
     b"/v1/api/instance/foo"),  # Envoy's documented example
    ("^/api/v([0-9]+)/", "/v\\1/", b"/api/v2/users?id=7&x=/api/v3/", b"/v2/users?id=7&x=/api/v3/"),
    ("o", "0", b"/foo/boo?o=o", b"/f00/b00?o=o"),  # every match in the path, not the query
    ("^/nomatch", "/x", b"/keep/me", b"/keep/me"),
    ("^/(a)(b)", "\\0+\\\\", b"/abc", b"/ab+\\c"),  # RE2: \0 is the whole match, \\ a backslash
])
def test_regex_rewrite(pattern, substitution, target, expected):
    assert rewrite(pattern, substitution, target) == expected


@pytest.mark.parametrize("substitution", ["/\\3", "/\\x", "/trailing\\"])
def test_regex_rewrite_substitution_is_checked_at_load(substitution):
    with pytest.raises(ConfigError) as info:
        rewrite("^/(a)(b)", substitution, b"/ab")
    assert info.value.path.endswith("routes[0].route.regex_rewrite.substitution")


# -- redirect locations ----------------------------------------------------------------------

def location(rd: Redirect, target: bytes, *, host: bytes = b"svc.local",
             route_path: str = "/") -> tuple[int, bytes]:
    """(status, Location) that Exchange.redirect_reply answers with."""
    sent = {}

    def direct_reply(status, body, *, extra=()):
        sent.update(status=status, body=body, headers=dict(extra))

    fake = SimpleNamespace(request=SimpleNamespace(target=target, host=host),
                           route=SimpleNamespace(path=route_path), direct_reply=direct_reply)
    Exchange.redirect_reply(fake, rd)
    assert sent["body"] == b""
    return sent["status"], sent["headers"][b"location"]


@pytest.mark.parametrize("rd,target,host,route_path,expected", [
    (Redirect(path=b"/new"), b"/old?a=1", b"svc.local", "/old",
     (301, b"http://svc.local/new?a=1")),
    (Redirect(path=b"/new?b=2"), b"/old?a=1", b"svc.local", "/old",
     (301, b"http://svc.local/new?b=2")),  # a query in path_redirect replaces the request's
    (Redirect(path=b"/new", strip_query=True, status=302), b"/old?a=1", b"svc", "/old",
     (302, b"http://svc/new")),
    (Redirect(prefix_rewrite=b"/v2/"), b"/v1/items?x=1", b"svc", "/v1/",
     (301, b"http://svc/v2/items?x=1")),
    (Redirect(scheme=b"https", status=308), b"/p", b"svc", "/",
     (308, b"https://svc/p")),
    (Redirect(host=b"other.example"), b"/p", b"svc:8080", "/",
     (301, b"http://other.example/p")),
    (Redirect(port=8443), b"/p", b"svc:8080", "/", (301, b"http://svc:8443/p")),
    (Redirect(port=8443), b"/p", b"svc", "/", (301, b"http://svc:8443/p")),
    (Redirect(port=8443), b"/p", b"[::1]:8080", "/", (301, b"http://[::1]:8443/p")),
    (Redirect(port=8443), b"/p", b"[::1]", "/", (301, b"http://[::1]:8443/p")),
    (Redirect(host=b"h.example", port=9000, scheme=b"https", path=b"/x", status=307),
     b"/p?q", b"svc", "/", (307, b"https://h.example:9000/x?q")),
])
def test_redirect_location(rd, target, host, route_path, expected):
    assert location(rd, target, host=host, route_path=route_path) == expected


# -- mirrored requests' authority -------------------------------------------------------------

@pytest.mark.parametrize("host,expected", [
    (b"api", b"api-shadow"),
    (b"api.example.com", b"api.example.com-shadow"),
    (b"api:8080", b"api-shadow:8080"),
    (b"10.0.0.1:80", b"10.0.0.1-shadow:80"),
    (b"[::1]", b"[::1]-shadow"),
    (b"[::1]:8080", b"[::1]-shadow:8080"),  # as Envoy: the host part, before the port
])
def test_shadow_head_suffixes_the_host(host, expected):
    head = (b"GET /p?host: x HTTP/1.1\r\nx-host: keep\r\nhost: %s\r\naccept: */*\r\n"
            b"content-length: 3\r\n\r\n" % host)
    assert shadow_head(head) == head.replace(b"\r\nhost: %s\r\n" % host,
                                             b"\r\nhost: %s\r\n" % expected)


def test_shadow_head_without_host_is_unchanged():
    head = b"GET / HTTP/1.1\r\naccept: */*\r\n\r\n"
    assert shadow_head(head) == head
