"""The compiled configuration of a sidecar: plain, immutable objects.

xDS resources (from a bootstrap file or a control plane) are validated and compiled into
these once, by `plait.dataplane.compile`; a `Snapshot` is swapped atomically. The request
path reads attributes and does dict lookups here; it never touches protobuf messages.
Durations are float seconds; 0 means "no limit" where a field says so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from plait.core.regex import Regex

if TYPE_CHECKING:
    from plait.dataplane.matchers import Literal


class LbPolicy(enum.Enum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RANDOM = "RANDOM"
    RING_HASH = "RING_HASH"


class Direction(enum.Enum):
    OUTBOUND = "OUTBOUND"
    INBOUND = "INBOUND"


class PathMatchKind(enum.Enum):
    PREFIX = "prefix"
    EXACT = "path"
    REGEX = "safe_regex"


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    weight: int = 1
    zone: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    priority: int = 0  # Envoy locality priority: 0 first; higher only when 0 is unhealthy
    tls: "PeerTls | None" = None  # net.tls_config: the transport socket this endpoint gets

    @property
    def key(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Envoy's `x-envoy-retry-on` conditions, compiled.

    retry_on holds condition names: "connect-failure", "reset", "5xx", "gateway-error",
    "retriable-status-codes". A request whose body outgrew `buffer_limit` is not retried.
    """

    retry_on: frozenset[str]
    num_retries: int = 1
    per_try_timeout: float = 0.0
    base_interval: float = 0.025  # Envoy's default back-off base
    max_interval: float = 0.25  # Envoy's default: 10 x base
    retriable_status_codes: frozenset[int] = frozenset()
    buffer_limit: int = 64 * 1024
    # Envoy's previous_hosts retry predicate: a retry picks again (up to
    # `host_selection_attempts` more times) while its pick is a host already tried
    previous_hosts: bool = False
    host_selection_attempts: int = 1
    # The lowest status a retry may be asked for: 500, or a lower retriable status code.
    # A response below it is told from the retriable ones with one comparison.
    lowest_retriable: int = field(default=500, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lowest_retriable",
                           min(500, min(self.retriable_status_codes, default=500)))


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    name: str
    weight: int


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """One header (or query parameter) condition; `name` is lower-case bytes (query
    parameter names keep their case), values are bytes. Pseudo-headers `:method`,
    `:authority` and `:path` match the request line and Host, as in Envoy."""

    name: bytes
    exact: bytes | None = None
    prefix: bytes | None = None
    matcher: Regex | Literal | None = None  # anything else; both have fullmatch()
    present: bool | None = None
    invert: bool = False


@dataclass(frozen=True, slots=True)
class HeaderEdit:
    """Headers to add (`append`: beside existing values; else replace) and to remove."""

    add: tuple[tuple[bytes, bytes, bool], ...] = ()
    remove: frozenset[bytes] = frozenset()

    def apply(self, headers: list) -> list:
        names = self.remove | {n for n, _, append in self.add if not append}
        out = [h for h in headers if h[0] not in names] if names else list(headers)
        out.extend((n, v) for n, v, _ in self.add)
        return out


@dataclass(frozen=True, slots=True)
class Redirect:
    status: int = 301  # Envoy's default response_code MOVED_PERMANENTLY
    scheme: bytes | None = None
    host: bytes | None = None
    port: int = 0
    path: bytes | None = None
    prefix_rewrite: bytes | None = None
    strip_query: bool = False


@dataclass(frozen=True, slots=True)
class Mirror:
    cluster: str
    fraction: float = 1.0  # of requests, 0..1


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """Where a ring-hash key comes from: a header, a cookie, a query parameter (the first
    of that name, compared case-sensitively, its value as sent), or the caller's address."""

    kind: str  # "header" | "cookie" | "query_parameter" | "source_ip"
    name: bytes = b""


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path_kind: PathMatchKind
    path: str  # the prefix, the exact path, or the regex source
    headers: tuple[HeaderMatch, ...] = ()
    case_sensitive: bool = True
    # action: exactly one of cluster / weighted_clusters / direct_status
    cluster: str = ""
    weighted_clusters: tuple[WeightedCluster, ...] = ()
    direct_status: int = 0
    direct_body: bytes = b""
    timeout: float = 15.0  # Envoy's route default; 0 disables
    retry: RetryPolicy | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: tuple[Regex, bytes] | None = None
    host_rewrite: str | None = None
    hash_policies: tuple[HashPolicy, ...] = ()
    query: tuple[HeaderMatch, ...] = ()  # query parameter conditions
    request_headers: HeaderEdit | None = None
    response_headers: HeaderEdit | None = None
    redirect: Redirect | None = None
    mirrors: tuple[Mirror, ...] = ()
    per_filter: dict = field(default_factory=dict, hash=False)  # filter name -> its config


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Host → virtual host, Envoy's order: exact, then suffix `*.x`, prefix `x.*`, then `*`."""

    name: str
    exact: dict[str, VirtualHost]
    suffixes: tuple[tuple[str, VirtualHost], ...]  # longest first
    prefixes: tuple[tuple[str, VirtualHost], ...]  # longest first
    default: VirtualHost | None
    virtual_hosts: tuple[VirtualHost, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    name: str
    endpoints: tuple[Endpoint, ...]
    lb_policy: LbPolicy = LbPolicy.ROUND_ROBIN
    connect_timeout: float = 5.0  # Envoy's default
    idle_timeout: float = 3600.0  # upstream connection idle timeout; Envoy's default 1 h
    max_requests_per_connection: int = 0  # 0: unlimited
    ring_size: int = 1024  # Envoy's minimum_ring_size default
    eds_service_name: str = ""  # non-empty: endpoints come by EDS under this name
    retry_budget: "RetryBudget" = field(default_factory=lambda: RetryBudget())
    outlier: "OutlierDetection | None" = None
    healthy_panic_threshold: float = 50.0  # percent; Envoy's default
    limits: "PoolLimits" = field(default_factory=lambda: PoolLimits())
    health_check: "HealthCheck | None" = None


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Retries may add at most `ratio` of the requests of the last `window` seconds, plus
    `min_per_second` (Linkerd's budget, whose defaults these are: 20% + 10/s over 10 s)."""

    ratio: float = 0.2
    min_per_second: float = 10.0
    window: float = 10.0


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Envoy's `circuit_breakers.thresholds` at priority DEFAULT, with Envoy's defaults:
    connections open or opening, requests waiting for a connection, requests in flight,
    and retries in flight, per cluster (per worker process)."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active health checking: Envoy's `health_checks[0]`. With `http_path` empty the
    check is a TCP connect; otherwise an HTTP GET whose status must fall in one of the
    `expected` half-open ranges [start, end)."""

    interval: float
    timeout: float
    unhealthy_threshold: int
    healthy_threshold: int
    http_path: str = ""
    http_host: str = ""  # the Host header; "" means the cluster's name, as in Envoy
    expected: tuple[tuple[int, int], ...] = ((200, 400),)


@dataclass(frozen=True, slots=True)
class FailureRate:
    """The failure-rate rule: over the last `window` seconds, a host with at least
    `min_requests` requests whose failures are at least `floor_percent` of them and at
    least `ratio` times the rest of the cluster's share is ejected; judged only while at
    least `min_hosts` hosts have `min_requests`. `ratio` 0 compares with nothing, as
    Envoy's failure_percentage. `enforcing` is the chance that a host found is ejected.
    Defaults are Envoy's failure_percentage_* defaults, the window its default
    `interval`."""

    min_requests: int = 50
    ratio: float = 0.0
    floor_percent: float = 85.0
    window: float = 10.0
    min_hosts: int = 5
    enforcing: float = 1.0  # enforcing_failure_percentage / 100, above 0 (0: rule off)


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive health: Envoy's outlier_detection fields and defaults. Each rule's
    `enforcing_*` is the chance that a host it finds is ejected: Envoy's percentage / 100,
    above 0 (a rule enforced at 0% is compiled as off)."""

    consecutive_5xx: int = 5  # 0: off
    consecutive_gateway_failure: int = 0  # 0: off (Envoy enforces it at 0% by default)
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 10.0
    failure_rate: FailureRate | None = None  # None: the rule is off
    enforcing_consecutive_5xx: float = 1.0
    enforcing_consecutive_gateway_failure: float = 1.0


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    name: str
    host: str
    port: int
    direction: Direction = Direction.OUTBOUND
    stat_prefix: str = ""
    route_table: RouteTable | None = None
    rds_name: str = ""  # non-empty: the route table comes by RDS under this name
    max_request_headers_bytes: int = 60 * 1024  # Envoy's default 60 KiB
    request_headers_timeout: float = 10.0  # 0 disables; Envoy default is off, we choose safe
    idle_timeout: float = 3600.0  # downstream idle; Envoy's HCM default 1 h
    connection_limit: int = 0  # 0: unlimited
    transport: "ListenerTransport | None" = None  # net.tls_config; None: plaintext only
    # ((filter name, compiled config or None), ...), ending with the router
    http_filters: tuple = (("envoy.filters.http.router", None),)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a sidecar serves with, at one version."""

    version: str
    listeners: tuple[ListenerConfig, ...]
    clusters: dict[str, ClusterConfig]
    node_id: str = ""
    admin_host: str = "127.0.0.1"
    admin_port: int = 15000
    raw: dict = field(default_factory=dict, compare=False)  # the source, for /config_dump
