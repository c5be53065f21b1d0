"""ServiceEntry (networking.istio.io/v1): hosts the mesh knows about besides the registry.

A ServiceEntry declares a host's ports and, with STATIC or DNS resolution, its endpoints,
so services outside the registry (a database on a VM, an external API) get routes, policies
and stats like any other. Plait accepts DUBBO as a port protocol in addition to Istio's.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, field_validator

from plait.model.base import Host, IstioModel, Metadata, PortNumber, WorkloadSelector

PROTOCOLS = frozenset(
    {"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "REDIS", "MYSQL", "TCP", "TLS",
     "UDP", "DUBBO"}
)  # fmt: skip


class ServicePort(IstioModel):
    number: PortNumber
    protocol: str | None = None
    name: Annotated[str, Field(min_length=1)]
    target_port: PortNumber | None = None

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, text: str | None) -> str | None:
        # Istio reads the protocol case-insensitively; keep what the user wrote.
        if text is not None and text.upper() not in PROTOCOLS:
            raise ValueError(f"unknown protocol {text!r}; expected one of {sorted(PROTOCOLS)}")
        return text


class WorkloadEntry(IstioModel):
    address: Annotated[str, Field(min_length=1)]
    ports: dict[str, PortNumber] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    network: str | None = None
    locality: str | None = None
    weight: Annotated[int, Field(ge=0)] | None = None
    service_account: str | None = None


class ServiceEntrySpec(IstioModel):
    hosts: Annotated[list[Host], Field(min_length=1)]
    addresses: list[str] = Field(default_factory=list)
    ports: list[ServicePort] = Field(default_factory=list)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] | None = None
    endpoints: list[WorkloadEntry] = Field(default_factory=list)
    workload_selector: WorkloadSelector | None = None
    export_to: list[str] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)

    @field_validator("addresses")
    @classmethod
    def _ip_or_cidr(cls, addresses: list[str]) -> list[str]:
        for text in addresses:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not an IP address or CIDR block") from None
        return addresses


class ServiceEntry(IstioModel):
    api_version: Literal[
        "networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"
    ]
    kind: Literal["ServiceEntry"]
    metadata: Metadata
    spec: ServiceEntrySpec
