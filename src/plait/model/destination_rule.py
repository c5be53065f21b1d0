"""DestinationRule (networking.istio.io/v1): policy applied after routing has chosen a host.

Subsets name groups of a host's endpoints by label; the traffic policy sets load balancing,
connection pool limits (Envoy's circuit breakers), outlier detection and upstream TLS.
Shapes and enum names are Istio's.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from plait.model.base import Duration, Host, IstioModel, Metadata, PortSelector

Percentage = Annotated[int, Field(ge=0, le=100)]
Count = Annotated[int, Field(ge=0)]


class HTTPCookie(IstioModel):
    name: Annotated[str, Field(min_length=1)]
    path: str | None = None
    ttl: Duration | None = None


class ConsistentHash(IstioModel):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    minimum_ring_size: Count | None = None

    @model_validator(mode="after")
    def _one_key(self) -> ConsistentHash:
        keys = (self.http_header_name, self.http_cookie, self.use_source_ip or None,
                self.http_query_parameter_name)  # fmt: skip
        if sum(k is not None for k in keys) != 1:
            raise ValueError(
                "set exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName"
            )
        return self


class LocalityDistribute(IstioModel):
    from_: str = Field(alias="from")
    to: dict[str, Annotated[int, Field(ge=0, le=100)]]


class LocalityFailover(IstioModel):
    from_: str = Field(alias="from")
    to: str


class LocalityLbSetting(IstioModel):
    distribute: list[LocalityDistribute] = Field(default_factory=list)
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)
    enabled: bool | None = None


class LoadBalancerSettings(IstioModel):
    simple: Literal["UNSPECIFIED", "ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH",
                    "LEAST_CONN"] | None = None  # fmt: skip  (LEAST_CONN: Istio's old name)
    consistent_hash: ConsistentHash | None = None
    locality_lb_setting: LocalityLbSetting | None = None
    warmup_duration_secs: Duration | None = None

    @model_validator(mode="after")
    def _one_policy(self) -> LoadBalancerSettings:
        if self.simple is not None and self.consistent_hash is not None:
            raise ValueError("set only one of simple, consistentHash")
        return self


class TcpKeepalive(IstioModel):
    probes: Count | None = None
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(IstioModel):
    max_connections: Count | None = None
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None


class HTTPSettings(IstioModel):
    http1_max_pending_requests: Count | None = None
    http2_max_requests: Count | None = None
    max_requests_per_connection: Count | None = None
    max_retries: Count | None = None
    idle_timeout: Duration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: Count | None = None


class ConnectionPoolSettings(IstioModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(IstioModel):
    consecutive_5xx_errors: Count | None = Field(default=None, alias="consecutive5xxErrors")
    consecutive_gateway_errors: Count | None = None
    consecutive_local_origin_failures: Count | None = None
    split_external_local_origin_errors: bool | None = None
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: Percentage | None = None
    min_health_percent: Percentage | None = None


class ClientTLSSettings(IstioModel):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = Field(default_factory=list)
    sni: str | None = None
    insecure_skip_verify: bool | None = None

    @model_validator(mode="after")
    def _mutual_needs_keys(self) -> ClientTLSSettings:
        if self.mode == "MUTUAL" and not self.credential_name and not (
            self.client_certificate and self.private_key
        ):
            raise ValueError("MUTUAL needs clientCertificate and privateKey, or credentialName")
        return self


class PortTrafficPolicy(IstioModel):
    port: PortSelector
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(IstioModel):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)


class Subset(IstioModel):
    name: Annotated[str, Field(min_length=1)]
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(IstioModel):
    host: Host
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)


class DestinationRule(IstioModel):
    api_version: Literal[
        "networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"
    ]
    kind: Literal["DestinationRule"]
    metadata: Metadata
    spec: DestinationRuleSpec
